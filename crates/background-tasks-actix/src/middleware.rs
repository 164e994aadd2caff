//! The middleware that makes the supervisor reachable from every request it wraps.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::HttpMessage;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use background_tasks::TaskSupervisor;
use pin_project_lite::pin_project;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::body::AfterResponseBody;
use crate::extract::BackgroundTasks;

/// Registers a [`TaskSupervisor`] with an actix-web `App`: every request it wraps can take the
/// [`BackgroundTasks`] extractor, and [`after_response`](BackgroundTasks::after_response) tasks
/// start once the response body has been sent or dropped.
///
/// Build the supervisor with [`runtime`](background_tasks::SupervisorBuilder::runtime) set
/// to a runtime that outlives the workers (the one that runs `main`): each actix worker runs
/// its own single-thread runtime, which stops with the worker and would drop the tasks its
/// handlers spawned. The middleware logs a warning when it is not set, and
/// [`serve`](crate::serve) refuses to start.
///
/// # Examples
///
/// ```
/// use actix_web::{App, web};
/// use background_tasks_actix::{BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::builder()
///     .runtime(tokio::runtime::Handle::current())
///     .build();
/// let app = App::new()
///     .wrap(BackgroundTasksMiddleware::new(supervisor.clone()))
///     .route("/jobs", web::post().to(|tasks: BackgroundTasks| async move {
///         tasks.spawn(async { /* ... */ }).map(|_| "accepted")
///     }));
/// # }
/// ```
#[derive(Clone)]
pub struct BackgroundTasksMiddleware {
    supervisor: TaskSupervisor,
}

impl BackgroundTasksMiddleware {
    /// A middleware that hands `supervisor` to the requests it wraps.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    ///
    /// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    /// ```
    #[must_use]
    pub fn new(supervisor: TaskSupervisor) -> Self {
        Self { supervisor }
    }
}

impl fmt::Debug for BackgroundTasksMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasksMiddleware")
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

impl<S, B> Transform<S, ServiceRequest> for BackgroundTasksMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
{
    type Response = ServiceResponse<AfterResponseBody<B>>;
    type Error = S::Error;
    type Transform = BackgroundTasksService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // Once per worker: cheap, and where the mistake shows before any task is lost.
        if self.supervisor.runtime().is_none() {
            tracing::warn!(
                "BackgroundTasksMiddleware: the supervisor has no runtime of its own, so tasks \
                 spawned from handlers run on the worker's runtime and die with the worker; \
                 build it with `TaskSupervisor::builder().runtime(tokio::runtime::Handle::current())` \
                 in main"
            );
        }
        ready(Ok(BackgroundTasksService {
            service,
            supervisor: self.supervisor.clone(),
        }))
    }
}

/// The service of [`BackgroundTasksMiddleware`]: puts a [`BackgroundTasks`] into each
/// request's extensions and moves the guard of its after-response tasks into the response
/// body.
///
/// # Examples
///
/// ```
/// use actix_web::{App, test, web};
/// use background_tasks_actix::{BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor};
///
/// # #[actix_web::main]
/// # async fn main() {
/// let app = test::init_service(
///     App::new()
///         .wrap(BackgroundTasksMiddleware::new(TaskSupervisor::new()))
///         .route("/", web::get().to(|tasks: BackgroundTasks| async move {
///             tasks.supervisor().len().to_string()
///         })),
/// )
/// .await;
/// let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
/// assert!(response.status().is_success());
/// # }
/// ```
pub struct BackgroundTasksService<S> {
    service: S,
    supervisor: TaskSupervisor,
}

impl<S> BackgroundTasksService<S> {
    /// The wrapped service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use actix_web::dev::Transform;
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let inner = actix_web::dev::fn_service(|request: actix_web::dev::ServiceRequest| async move {
    /// #     Ok::<_, actix_web::Error>(request.into_response(actix_web::HttpResponse::Ok()))
    /// # });
    /// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    /// let service = middleware.new_transform(inner).await.unwrap();
    /// let _inner = service.get_ref();
    /// # }
    /// ```
    #[inline]
    pub fn get_ref(&self) -> &S {
        &self.service
    }
}

impl<S> fmt::Debug for BackgroundTasksService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasksService")
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for BackgroundTasksService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>>,
{
    type Response = ServiceResponse<AfterResponseBody<B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    forward_ready!(service);

    fn call(&self, request: ServiceRequest) -> Self::Future {
        // The gate of this request's after-response tasks: cancelled by the guard, which
        // lives in the response future and then in the response body.
        let sent = CancellationToken::new();
        request
            .extensions_mut()
            .insert(BackgroundTasks::for_request(
                self.supervisor.clone(),
                sent.clone(),
            ));
        ResponseFuture {
            inner: self.service.call(request),
            guard: Some(sent.drop_guard()),
        }
    }
}

pin_project! {
    /// The response future of [`BackgroundTasksService`]: moves the request's after-response
    /// guard into the response body. Dropped before the response exists (the client went
    /// away, or the worker stopped), it opens the gate itself.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<DropGuard>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, E>>,
{
    type Output = Result<ServiceResponse<AfterResponseBody<B>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        // An error drops the guard with the future: there is no response to wait for.
        let guard = this.guard.take();
        Poll::Ready(Ok(
            response.map_body(|_, body| AfterResponseBody::new(body, guard))
        ))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
