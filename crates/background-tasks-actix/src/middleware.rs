//! The middleware that makes the supervisor reachable from every request it wraps.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_http::ConnectionType;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready};
use background_tasks::TaskSupervisor;
use pin_project_lite::pin_project;

use crate::body::AfterResponseBody;
use crate::gate::GateGuard;
use crate::in_flight::InFlight;
use crate::request_data::RequestData;

/// Registers a [`TaskSupervisor`] with an actix-web `App`: every request it wraps can take the
/// [`BackgroundTasks`](crate::BackgroundTasks) extractor, and
/// [`after_response`](crate::BackgroundTasks::after_response) tasks start once the response
/// body has been sent or dropped.
///
/// It also counts the requests in flight (from the middleware until the response body has been
/// sent or dropped), which is how [`serve`](crate::serve) knows when they have drained. Create it
/// once, outside the `HttpServer::new` closure, give a clone to every `App`, and hand it to
/// [`serve`](crate::serve): a middleware created inside the closure is a different one in each
/// worker, whose requests `serve` cannot see.
///
/// # Where tasks run
///
/// The supervisor spawns a task on its [`runtime`](background_tasks::SupervisorBuilder::runtime)
/// when one is set, and otherwise on the runtime of the code that spawns it: from a handler,
/// that is the single-thread runtime of the actix worker that runs the request, where the task
/// costs no more than a `tokio::spawn`. Each worker's runtime stops with the worker, and
/// [`serve`](crate::serve) keeps the workers running until the supervisor has shut down, so
/// these tasks are drained, cancelled and aborted like any other. Without `serve` (say, with
/// `HttpServer::run` and actix's own signal handling), the workers stop first and drop the
/// tasks still running on them, which the supervisor reports as
/// [`Dropped`](background_tasks::FailureKind::Dropped); the middleware then logs a warning at
/// startup, unless the supervisor has a runtime of its own that outlives the workers.
///
/// # Examples
///
/// ```
/// use actix_web::{App, web};
/// use background_tasks_actix::{BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
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
    /// Shared by every clone, and with `serve`.
    in_flight: Arc<InFlight>,
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
        Self {
            supervisor,
            in_flight: Arc::default(),
        }
    }

    /// The supervisor it hands to requests.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    ///
    /// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    /// assert!(middleware.supervisor().is_empty());
    /// ```
    #[inline]
    #[must_use]
    pub fn supervisor(&self) -> &TaskSupervisor {
        &self.supervisor
    }

    /// How many of the requests it wraps are in flight: from the middleware until their
    /// response body has been sent or dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor};
    ///
    /// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    /// assert_eq!(middleware.requests_in_flight(), 0);
    /// ```
    #[inline]
    #[must_use]
    pub fn requests_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    pub(crate) fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }
}

impl fmt::Debug for BackgroundTasksMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasksMiddleware")
            .field("supervisor", &self.supervisor)
            .field("in_flight", &self.in_flight)
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
        if self.supervisor.runtime().is_none() && !self.in_flight.is_served() {
            tracing::warn!(
                "BackgroundTasksMiddleware: the server does not run under \
                 `background_tasks_actix::serve` with this middleware (or a clone of it), so \
                 tasks spawned from handlers run on the worker's runtime and are dropped when \
                 the worker stops; run it with `serve(server, middleware)`, creating the \
                 middleware once outside `HttpServer::new`, or give the supervisor a runtime \
                 that outlives the workers (`TaskSupervisor::builder().runtime(..)`)"
            );
        }
        ready(Ok(BackgroundTasksService {
            service,
            data: RequestData::new(self.supervisor.clone(), self.in_flight.shard()),
        }))
    }
}

/// The service of [`BackgroundTasksMiddleware`]: makes a
/// [`BackgroundTasks`](crate::BackgroundTasks) extractable in each request (as request-scoped
/// app data) and moves the guard of its after-response tasks, and the count of the
/// request in flight, into the response body. Once [`serve`](crate::serve) has stopped
/// accepting, its responses close their connection (`Connection: close`), except upgrades.
///
/// # Panics
///
/// When a middleware outside it keeps a clone of the request while it is called, as actix's
/// own router and resources with app data do (actix warns that "cloning an `HttpRequest`
/// might cause panics"): it adds its app data to the request, which needs the request
/// unshared.
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
    // This worker's own: what each request clones or counts (its gate, reused from request
    // to request, and the worker's shard of the count in flight) is written by this worker's
    // thread only, rather than bounced between the cores of every worker.
    data: RequestData,
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
            .field("supervisor", self.data.supervisor())
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

    fn call(&self, mut request: ServiceRequest) -> Self::Future {
        // The app data that the extractor finds, with the gate of this request's after-response
        // tasks, and its guard, which opens the gate and ends the request's count in flight: it
        // lives in the response future and then in the response body. Counted from before the
        // handler runs, so that the drain cannot end between the handler's spawn and the end of
        // its response.
        let (data, guard) = self.data.next();
        // Panics if the request has been cloned, as actix's own router (which records the
        // matched resource in it) and resources with app data (this same call) do: a clone held
        // across the call of the inner service breaks actix with or without this middleware.
        request.add_data_container(data);
        ResponseFuture {
            inner: self.service.call(request),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// The response future of [`BackgroundTasksService`]: moves the request's after-response
    /// guard, which also ends its count in flight, into the response body. Dropped before the
    /// response exists (the client went away, or the worker stopped), it opens the gate itself
    /// and the request is no longer in flight. Not `Send`, as the body it makes: both stay on
    /// their worker.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<GateGuard>,
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
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        // An error drops the guard with the future: there is no response to wait for.
        let guard = this.guard.take();
        if guard.as_ref().is_some_and(GateGuard::is_draining) {
            // The server no longer accepts: a keep-alive connection would only bring requests
            // that the end of the drain cuts off. An upgrade keeps its connection.
            let head = response.response_mut().head_mut();
            if !head.upgrade() {
                head.set_connection_type(ConnectionType::Close);
            }
        }
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
