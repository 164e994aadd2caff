//! The response body that starts after-response tasks once it is sent or dropped.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::gate::AfterResponseGuard;

pin_project! {
    /// The response body of [`BackgroundTasksService`](crate::BackgroundTasksService): the
    /// inner body, plus the guard that starts the request's after-response tasks once the body
    /// has been sent in full (its last frame was taken) or dropped, as tower-http's in-flight
    /// requests counter does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use axum::body::Body;
    /// use axum::http::{Request, Response};
    /// use background_tasks_axum::{AfterResponseBody, BackgroundTasksService};
    /// use tower::{ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let inner = service_fn(|_: Request<Body>| async {
    ///     Ok::<_, Infallible>(Response::new(Body::from("hello")))
    /// });
    /// let service = BackgroundTasksService::new(inner, background_tasks::TaskSupervisor::new());
    /// let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
    /// let body: AfterResponseBody<Body> = response.into_body();
    /// let bytes = axum::body::to_bytes(Body::new(body), 1024).await.unwrap();
    /// assert_eq!(bytes, "hello");
    /// # }
    /// ```
    pub struct AfterResponseBody<B> {
        #[pin]
        inner: B,
        guard: Option<AfterResponseGuard>,
    }
}

impl<B> AfterResponseBody<B> {
    pub(crate) fn new(inner: B, guard: Option<AfterResponseGuard>) -> Self {
        Self { inner, guard }
    }

    /// The body it wraps.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use axum::body::Body;
    /// # use axum::http::{Request, Response};
    /// # use background_tasks_axum::BackgroundTasksService;
    /// # use tower::{ServiceExt, service_fn};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let inner = service_fn(|_: Request<Body>| async {
    /// #     Ok::<_, Infallible>(Response::new(String::from("hello")))
    /// # });
    /// # let service = BackgroundTasksService::new(inner, background_tasks::TaskSupervisor::new());
    /// let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
    /// assert_eq!(response.body().get_ref(), "hello");
    /// # }
    /// ```
    #[inline]
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for AfterResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // The last frame has been taken, or the body failed: the response is as sent as it
        // will ever be, so the tasks start now rather than when the server drops the body.
        if frame.is_none() || matches!(frame, Some(Err(_))) || this.inner.is_end_stream() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for AfterResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterResponseBody")
            .field("sent", &self.guard.is_none())
            .finish_non_exhaustive()
    }
}
