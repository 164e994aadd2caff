//! The tower layer that makes the supervisor reachable from every request under it.

use std::fmt;
use std::task::{Context, Poll};

use background_tasks::TaskSupervisor;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::AfterResponseBody;
use crate::extract::BackgroundTasks;
use crate::future::ResponseFuture;
use crate::gate::{AfterResponseGuard, RequestState};
use crate::shared::SharedSupervisor;

/// Makes a [`TaskSupervisor`] reachable from every request under it, through the
/// [`BackgroundTasks`] extractor, and runs [`after_response`](BackgroundTasks::after_response)
/// tasks once each response has been sent.
///
/// [`serve`](crate::serve) does this for every request it serves, at less cost: an app it runs
/// needs the layer only for routes that should spawn on another supervisor. Add it to an app
/// served otherwise: a router called with `oneshot` in tests, `axum::serve`, another server.
///
/// # Examples
///
/// ```
/// use axum::{Router, routing::post};
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{BackgroundTasks, BackgroundTasksLayer};
///
/// let supervisor = TaskSupervisor::new();
/// let app: Router = Router::new()
///     .route("/jobs", post(|tasks: BackgroundTasks| async move {
///         tasks.spawn(async { /* ... */ }).map(|_| "accepted")
///     }))
///     .layer(BackgroundTasksLayer::new(supervisor));
/// ```
#[derive(Clone)]
pub struct BackgroundTasksLayer {
    supervisor: SharedSupervisor,
}

impl BackgroundTasksLayer {
    /// A layer that hands `supervisor` to the requests under it.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = background_tasks_axum::BackgroundTasksLayer::new(
    ///     background_tasks::TaskSupervisor::new(),
    /// );
    /// ```
    #[must_use]
    pub fn new(supervisor: TaskSupervisor) -> Self {
        Self {
            supervisor: SharedSupervisor::new(supervisor),
        }
    }
}

impl fmt::Debug for BackgroundTasksLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasksLayer")
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

impl<S> Layer<S> for BackgroundTasksLayer {
    type Service = BackgroundTasksService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BackgroundTasksService {
            inner,
            supervisor: self.supervisor.clone(),
        }
    }
}

/// The service of [`BackgroundTasksLayer`]: puts a [`BackgroundTasks`] into each request's
/// extensions, and moves the request's after-response guard into the response body, so that
/// after-response tasks start when the body has been sent or dropped.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use axum::body::Body;
/// use axum::http::{Request, Response};
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{BackgroundTasks, BackgroundTasksService};
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let inner = service_fn(|request: Request<Body>| async move {
///     let tasks = request.extensions().get::<BackgroundTasks>().cloned().unwrap();
///     tasks.after_response(async { /* ... */ }).unwrap();
///     Ok::<_, Infallible>(Response::new(Body::empty()))
/// });
/// let service = BackgroundTasksService::new(inner, TaskSupervisor::new());
/// let response = service.oneshot(Request::new(Body::empty())).await.unwrap();
/// drop(response); // the after-response task starts now
/// # }
/// ```
#[derive(Clone)]
pub struct BackgroundTasksService<S> {
    inner: S,
    supervisor: SharedSupervisor,
}

impl<S> BackgroundTasksService<S> {
    /// Wraps `inner`, handing `supervisor` to its requests; the same as applying a
    /// [`BackgroundTasksLayer`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::BackgroundTasksService;
    ///
    /// let router: axum::Router = axum::Router::new();
    /// let service = BackgroundTasksService::new(router, background_tasks::TaskSupervisor::new());
    /// ```
    #[must_use]
    pub fn new(inner: S, supervisor: TaskSupervisor) -> Self {
        Self {
            inner,
            supervisor: SharedSupervisor::new(supervisor),
        }
    }

    /// The wrapped service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_axum::BackgroundTasksService;
    /// let service = BackgroundTasksService::new(7, background_tasks::TaskSupervisor::new());
    /// assert_eq!(*service.get_ref(), 7);
    /// ```
    #[inline]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_axum::BackgroundTasksService;
    /// let mut service = BackgroundTasksService::new(7, background_tasks::TaskSupervisor::new());
    /// *service.get_mut() += 1;
    /// assert_eq!(*service.get_ref(), 8);
    /// ```
    #[inline]
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the wrapped service.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_axum::BackgroundTasksService;
    /// let service = BackgroundTasksService::new(7, background_tasks::TaskSupervisor::new());
    /// assert_eq!(service.into_inner(), 7);
    /// ```
    #[inline]
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for BackgroundTasksService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasksService")
            .field("inner", &self.inner)
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for BackgroundTasksService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<AfterResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let guard = attach(&mut request, &self.supervisor);
        ResponseFuture::new(self.inner.call(request), guard)
    }
}

/// Makes `supervisor` reachable from `request` through a [`BackgroundTasks`] extension, and
/// returns the guard that starts the request's after-response tasks once dropped: what the
/// layer and [`serve`](crate::serve) do to each request.
#[inline]
pub(crate) fn attach<B>(
    request: &mut Request<B>,
    supervisor: &SharedSupervisor,
) -> AfterResponseGuard {
    // Shared by the extractor, the after-response tasks and the guard that opens their gate.
    // With the extension it goes into, this costs two small allocations per request.
    let state = RequestState::new(supervisor.clone());
    request
        .extensions_mut()
        .insert(BackgroundTasks::from_state(state.clone()));
    AfterResponseGuard::new(state)
}
