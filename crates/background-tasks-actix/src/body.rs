//! The response body that starts after-response tasks once it is sent or dropped.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use pin_project_lite::pin_project;

use crate::gate::GateGuard;

pin_project! {
    /// The response body of [`BackgroundTasksService`](crate::BackgroundTasksService): the
    /// inner body, plus the guard that starts the request's after-response tasks and ends its
    /// count in flight once actix has taken its last chunk, or when it is dropped, as
    /// tower-http's in-flight requests counter does.
    ///
    /// Like actix's own `BoxBody`, it is not `Send`: it stays on the worker that made it, and
    /// its guard's reference count is that worker's own.
    ///
    /// # Examples
    ///
    /// ```
    /// use actix_web::{App, HttpResponse, test, web};
    /// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    ///
    /// # #[actix_web::main]
    /// # async fn main() {
    /// let app = test::init_service(
    ///     App::new()
    ///         .wrap(BackgroundTasksMiddleware::new(TaskSupervisor::new()))
    ///         .route("/", web::get().to(|| async { HttpResponse::Ok().body("hello") })),
    /// )
    /// .await;
    /// let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// // Reading the body to its end starts the request's after-response tasks.
    /// assert_eq!(test::read_body(response).await, "hello");
    /// # }
    /// ```
    pub struct AfterResponseBody<B> {
        #[pin]
        inner: B,
        guard: Option<GateGuard>,
    }
}

impl<B> AfterResponseBody<B> {
    pub(crate) fn new(inner: B, guard: Option<GateGuard>) -> Self {
        Self { inner, guard }
    }

    /// The body it wraps.
    ///
    /// # Examples
    ///
    /// ```
    /// # use actix_web::{App, HttpResponse, test, web};
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    /// # #[actix_web::main]
    /// # async fn main() {
    /// # let app = test::init_service(
    /// #     App::new()
    /// #         .wrap(BackgroundTasksMiddleware::new(TaskSupervisor::new()))
    /// #         .route("/", web::get().to(|| async { HttpResponse::Ok().finish() })),
    /// # )
    /// # .await;
    /// let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// let _inner = response.response().body().get_ref();
    /// # }
    /// ```
    #[inline]
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: MessageBody> MessageBody for AfterResponseBody<B> {
    type Error = B::Error;

    #[inline]
    fn size(&self) -> BodySize {
        self.inner.size()
    }

    #[inline]
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let chunk = ready!(this.inner.poll_next(cx));
        // The last chunk has been taken, or the body failed: the response is as sent as it
        // will ever be, so the tasks start now rather than when actix drops the body.
        if matches!(chunk, None | Some(Err(_))) {
            this.guard.take();
        }
        Poll::Ready(chunk)
    }

    // `try_into_bytes` keeps its default (`Err(self)`): taking the bytes out early, as a
    // `BoxBody` does, would start the tasks long before the response is written.
}

impl<B> fmt::Debug for AfterResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AfterResponseBody")
            .field("sent", &self.guard.is_none())
            .finish_non_exhaustive()
    }
}
