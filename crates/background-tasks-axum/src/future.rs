//! The response future of [`BackgroundTasksService`](crate::BackgroundTasksService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use crate::body::AfterResponseBody;
use crate::gate::AfterResponseGuard;

pin_project! {
    /// The response future of [`BackgroundTasksService`](crate::BackgroundTasksService): moves
    /// the request's after-response guard into the response body. Dropped before the response
    /// exists (the handler panicked, or the client went away), it opens the gate itself, so
    /// that the request's after-response tasks start.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use axum::body::Body;
    /// use axum::http::{Request, Response};
    /// use background_tasks_axum::{BackgroundTasksService, ResponseFuture};
    /// use tower::{Service, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let inner = service_fn(|_: Request<Body>| async {
    ///     Ok::<_, Infallible>(Response::new(Body::empty()))
    /// });
    /// let mut service = BackgroundTasksService::new(inner, background_tasks::TaskSupervisor::new());
    /// let future: ResponseFuture<_> = service.call(Request::new(Body::empty()));
    /// let response = future.await.unwrap();
    /// # drop(response);
    /// # }
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<AfterResponseGuard>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: AfterResponseGuard) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AfterResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        // An error drops the guard with the future: there is no response to wait for.
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| AfterResponseBody::new(body, guard))))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
