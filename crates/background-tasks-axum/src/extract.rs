//! The extractor that handlers spawn background tasks with, and its rejection.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use background_tasks::{TaskBuilder, TaskContext, TaskHandle, TaskSupervisor, TrackedFuture};
use http::StatusCode;
use http::request::Parts;
use tokio::runtime::Handle;

use crate::error::BackgroundTaskError;
use crate::gate::RequestState;

/// Spawns supervised background tasks from a handler: an axum extractor for the supervisor
/// that [`BackgroundTasksLayer`](crate::BackgroundTasksLayer) makes reachable.
///
/// The methods mirror [`TaskSupervisor`]'s (those that fit a handler: for the others, such as
/// `spawn_local`, call them on [`supervisor`](Self::supervisor), whose errors convert with
/// `?` too) and return a [`BackgroundTaskError`] that answers
/// `503` with `Retry-After` when the supervisor is shutting down or at capacity, so handlers can
/// use `?`. [`after_response`](Self::after_response) schedules work that starts once the
/// response has been sent.
///
/// Used in an app that neither [`serve`](crate::serve) runs nor the layer wraps, the extractor
/// rejects the request with [`MissingBackgroundTasksLayer`], a `500` that says how to add
/// either; `Option<BackgroundTasks>` gives `None` instead.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, http::StatusCode, routing::post};
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer};
///
/// async fn sign_up(tasks: BackgroundTasks) -> Result<StatusCode, BackgroundTaskError> {
///     // Outlives the request; shutdown waits for it.
///     tasks.task("welcome-mail").spawn(async {
///         tokio::time::sleep(Duration::from_millis(100)).await;
///     })?;
///     // Starts once the response has been sent.
///     tasks.after_response(async { tracing::info!("signed up") })?;
///     Ok(StatusCode::CREATED)
/// }
///
/// let supervisor = TaskSupervisor::new();
/// let app: Router = Router::new()
///     .route("/sign-up", post(sign_up))
///     .layer(BackgroundTasksLayer::new(supervisor));
/// ```
#[derive(Clone)]
pub struct BackgroundTasks {
    state: Arc<RequestState>,
}

impl BackgroundTasks {
    /// An extractor value outside of any request, for calling a handler directly in a test.
    /// There is no response to wait for, so [`after_response`](Self::after_response) tasks
    /// start at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::TaskSupervisor;
    /// use background_tasks_axum::BackgroundTasks;
    ///
    /// async fn handler(tasks: BackgroundTasks) -> &'static str {
    ///     tasks.spawn(async { /* ... */ }).unwrap();
    ///     "ok"
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::new();
    /// assert_eq!(handler(BackgroundTasks::new(supervisor.clone())).await, "ok");
    /// assert_eq!(supervisor.shutdown().await.completed(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn new(supervisor: TaskSupervisor) -> Self {
        Self {
            state: RequestState::open(supervisor),
        }
    }

    pub(crate) fn from_state(state: Arc<RequestState>) -> Self {
        Self { state }
    }

    /// Spawns `future` as a supervised task; see [`TaskSupervisor::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let handle = tasks.spawn(async { /* ... */ })?;
    ///     Ok(format!("task {}", handle.id()))
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// A [`BackgroundTaskError`] (a `503` response) once the supervisor is shutting down or
    /// when it runs `max_tasks` tasks. The future is then dropped without being polled.
    ///
    /// # Panics
    ///
    /// Like [`tokio::spawn`], panics when called outside of a Tokio runtime.
    #[track_caller]
    #[inline]
    pub fn spawn<F>(&self, future: F) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.state.supervisor.spawn(future)?)
    }

    /// Spawns the future that `task` builds from its [`TaskContext`]; see
    /// [`TaskSupervisor::spawn_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.spawn_with(|ctx| async move {
    ///         tokio::select! {
    ///             _ = ctx.cancelled() => {}
    ///             _ = tokio::time::sleep(Duration::from_secs(60)) => {}
    ///         }
    ///     })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_with<F, Fut>(
        &self,
        task: F,
    ) -> Result<TaskHandle<Fut::Output>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(self.state.supervisor.spawn_with(task)?)
    }

    /// Runs `function` on tokio's blocking thread pool as a supervised task; see
    /// [`TaskSupervisor::spawn_blocking`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(10)))?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_blocking<F, R>(&self, function: F) -> Result<TaskHandle<R>, BackgroundTaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.state.supervisor.spawn_blocking(function)?)
    }

    /// Spawns `future` as a supervised task on the runtime `handle` refers to; see
    /// [`TaskSupervisor::spawn_on`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    /// use tokio::runtime::Handle;
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     let heavy: Handle = Handle::current(); // say, a runtime kept for heavy work
    ///     tasks.spawn_on(async { /* ... */ }, &heavy)?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn spawn_on<F>(
        &self,
        future: F,
        handle: &Handle,
    ) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.state.supervisor.spawn_on(future, handle)?)
    }

    /// Tracks `future`, which the handler awaits itself, as a supervised task: shutdown
    /// drains it and the report names it, while the response waits for it; see
    /// [`TaskSupervisor::track_future`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn save(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     let written = tasks.track_future(async { /* write to the store */ "saved" })?;
    ///     Ok(written.await)
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(save);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[inline]
    pub fn track_future<F: Future>(
        &self,
        future: F,
    ) -> Result<TrackedFuture<F>, BackgroundTaskError> {
        Ok(self.state.supervisor.track_future(future)?)
    }

    /// Tracks the future that `task` builds from its [`TaskContext`], which the handler awaits
    /// itself; see [`TaskSupervisor::track_future_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn export(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let rows = tasks.track_future_with(|ctx| async move {
    ///         let mut rows = 0;
    ///         while rows < 3 && !ctx.is_cancelled() {
    ///             rows += 1; // one batch
    ///         }
    ///         rows
    ///     })?;
    ///     Ok(format!("{} rows", rows.await))
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(export);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    #[inline]
    pub fn track_future_with<F, Fut>(
        &self,
        task: F,
    ) -> Result<TrackedFuture<Fut>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future,
    {
        Ok(self.state.supervisor.track_future_with(task)?)
    }

    /// A builder for a task with a name, shown in its tracing span, in failure reports and in
    /// the shutdown report; see [`TaskSupervisor::task`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("resize-avatar").spawn_blocking(|| { /* ... */ })?;
    ///     tasks.task("audit-log").after_response(async { /* ... */ })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    #[inline]
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> BackgroundTaskBuilder<'_> {
        BackgroundTaskBuilder {
            builder: self.state.supervisor.task(name),
            state: &self.state,
        }
    }

    /// Schedules `future` to run once the response has been sent, like Starlette's background
    /// tasks or ASP.NET's `OnCompleted`, for work the client should not wait for.
    ///
    /// Exactly one supervised task is spawned, at once, named `after-response`: shutdown waits
    /// for it from this call on. It starts `future` when the response body has been sent in
    /// full (the server took its last frame, which it may still be writing to the socket), or
    /// dropped (the client went away, or the handler panicked). Several such tasks run
    /// concurrently, and one that panics does not stop the others. Called once the response is
    /// already gone (from a task holding a clone), it starts `future` at once.
    ///
    /// If the response is still not gone when the supervisor's shutdown reaches its cancel
    /// phase, the task ends without running `future`, and says so in a warning.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn checkout(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.after_response(async { /* update the recommendations */ })?;
    ///     Ok("thank you")
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(checkout);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn`](Self::spawn).
    #[track_caller]
    #[inline]
    pub fn after_response<F>(&self, future: F) -> Result<(), BackgroundTaskError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.task(AFTER_RESPONSE).after_response(future)
    }

    /// The supervisor the tasks are spawned on.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::BackgroundTasks;
    ///
    /// async fn running(tasks: BackgroundTasks) -> String {
    ///     tasks.supervisor().len().to_string()
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::get(running);
    /// ```
    #[inline]
    #[must_use]
    pub fn supervisor(&self) -> &TaskSupervisor {
        &self.state.supervisor
    }
}

/// The name of after-response tasks spawned without one.
const AFTER_RESPONSE: &str = "after-response";

impl fmt::Debug for BackgroundTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasks")
            .field("supervisor", &self.state.supervisor)
            .field("response_done", &self.state.is_open())
            .finish()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BackgroundTasks {
    type Rejection = MissingBackgroundTasksLayer;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Self>() {
            Some(tasks) => Ok(tasks.clone()),
            None => {
                tracing::error!("{}", MissingBackgroundTasksLayer.body_text());
                Err(MissingBackgroundTasksLayer)
            }
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for BackgroundTasks {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Self>().cloned())
    }
}

/// Spawns a named task from [`BackgroundTasks::task`]; its methods mirror
/// [`TaskBuilder`]'s, plus [`after_response`](Self::after_response).
///
/// # Examples
///
/// ```
/// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
///
/// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
///     let handle = tasks.task("checksum").spawn_blocking(|| 42)?;
///     drop(handle); // detached: it runs on, and shutdown waits for it
///     Ok(())
/// }
/// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
/// ```
#[must_use = "a BackgroundTaskBuilder does nothing until one of its spawn methods is called"]
pub struct BackgroundTaskBuilder<'a> {
    builder: TaskBuilder<'a>,
    state: &'a Arc<RequestState>,
}

impl BackgroundTaskBuilder<'_> {
    /// Ends the task if it runs longer than `timeout`; see [`TaskBuilder::timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks
    ///         .task("call-upstream")
    ///         .timeout(Duration::from_secs(30))
    ///         .spawn_with(|ctx| async move { ctx.cancelled().await })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    #[inline]
    pub fn timeout(self, timeout: std::time::Duration) -> Self {
        Self {
            builder: self.builder.timeout(timeout),
            ..self
        }
    }

    /// Spawns `future` as a named task once there is room for it, under its name's limit and
    /// `max_tasks`, instead of queueing it or answering 503; see
    /// [`TaskBuilder::spawn_when_ready`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("import-row").spawn_when_ready(async { /* ... */ }).await?;
    ///     Ok("accepted")
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// A 503 once shutdown has begun, as [`TaskBuilder::spawn_when_ready`].
    ///
    /// # Cancel safety
    ///
    /// As [`TaskBuilder::spawn_when_ready`].
    pub async fn spawn_when_ready<F>(
        self,
        future: F,
    ) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.builder.spawn_when_ready(future).await?)
    }

    /// Spawns `future` as a named task; see [`TaskBuilder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("ping").spawn(async {})?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn<F>(self, future: F) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.builder.spawn(future)?)
    }

    /// Spawns the future that `task` builds from its [`TaskContext`] as a named task; see
    /// [`TaskBuilder::spawn_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("poll").spawn_with(|ctx| async move { ctx.shutdown_started().await })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn_with<F, Fut>(self, task: F) -> Result<TaskHandle<Fut::Output>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(self.builder.spawn_with(task)?)
    }

    /// Runs `function` on tokio's blocking thread pool as a named task; see
    /// [`TaskBuilder::spawn_blocking`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("compress").spawn_blocking(|| { /* ... */ })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn_blocking<F, R>(self, function: F) -> Result<TaskHandle<R>, BackgroundTaskError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.builder.spawn_blocking(function)?)
    }

    /// Runs `function` with its [`TaskContext`] on tokio's blocking thread pool as a named
    /// task; see [`TaskBuilder::spawn_blocking_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("scan").spawn_blocking_with(|ctx| {
    ///         while !ctx.is_cancelled() { /* one unit of work */ break; }
    ///     })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn_blocking_with<F, R>(
        self,
        function: F,
    ) -> Result<TaskHandle<R>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> R + Send + 'static,
        R: Send + 'static,
    {
        Ok(self.builder.spawn_blocking_with(function)?)
    }

    /// Spawns `future` as a named task on the runtime `handle` refers to; see
    /// [`TaskBuilder::spawn_on`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     let heavy = tokio::runtime::Handle::current();
    ///     tasks.task("render").spawn_on(async { /* ... */ }, &heavy)?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn_on<F>(
        self,
        future: F,
        handle: &Handle,
    ) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.builder.spawn_on(future, handle)?)
    }

    /// Spawns the future that `task` builds from its [`TaskContext`] as a named task on the
    /// runtime `handle` refers to; see [`TaskBuilder::spawn_with_on`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     let heavy = tokio::runtime::Handle::current();
    ///     tasks
    ///         .task("poll")
    ///         .spawn_with_on(|ctx| async move { ctx.shutdown_started().await }, &heavy)?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn_with_on<F, Fut>(
        self,
        task: F,
        handle: &Handle,
    ) -> Result<TaskHandle<Fut::Output>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(self.builder.spawn_with_on(task, handle)?)
    }

    /// Tracks `future`, which the handler awaits itself, as a named task; see
    /// [`BackgroundTasks::track_future`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn save(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     Ok(tasks.task("save-order").track_future(async { "saved" })?.await)
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(save);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    #[inline]
    pub fn track_future<F: Future>(
        self,
        future: F,
    ) -> Result<TrackedFuture<F>, BackgroundTaskError> {
        Ok(self.builder.track_future(future)?)
    }

    /// Tracks the future that `task` builds from its [`TaskContext`], which the handler awaits
    /// itself, as a named task; see [`BackgroundTasks::track_future_with`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn export(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let export = tasks
    ///         .task("export")
    ///         .track_future_with(|ctx| async move { ctx.is_cancelled() })?;
    ///     Ok(format!("cut short: {}", export.await))
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(export);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    #[inline]
    pub fn track_future_with<F, Fut>(
        self,
        task: F,
    ) -> Result<TrackedFuture<Fut>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future,
    {
        Ok(self.builder.track_future_with(task)?)
    }

    /// Schedules `future` as a named task that starts once the response has been sent; see
    /// [`BackgroundTasks::after_response`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<(), BackgroundTaskError> {
    ///     tasks.task("audit-log").after_response(async { /* ... */ })?;
    ///     Ok(())
    /// }
    /// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn`].
    #[track_caller]
    pub fn after_response<F>(self, future: F) -> Result<(), BackgroundTaskError>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let state = Arc::clone(self.state);
        let handle = self.builder.spawn_with(move |ctx| async move {
            // Biased towards the gate: a response that is gone runs its tasks even when the
            // cancel phase has begun too.
            let opened = tokio::select! {
                biased;
                () = state.wait_open() => true,
                () = ctx.cancelled() => false,
            };
            // The request's state is not needed any more: free it before the work begins.
            drop(state);
            if opened {
                future.await;
            } else {
                tracing::warn!(
                    task.id = ctx.id().as_u64(),
                    task.name = ctx.name(),
                    "after-response task {} ({}) did not run: its response was still not sent \
                     when shutdown began cancelling tasks",
                    ctx.id(),
                    ctx.name().unwrap_or(AFTER_RESPONSE),
                );
            }
        })?;
        // Detached: supervised like any task, and awaited at shutdown.
        drop(handle);
        Ok(())
    }
}

impl fmt::Debug for BackgroundTaskBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTaskBuilder")
            .field("builder", &self.builder)
            .finish_non_exhaustive()
    }
}

/// The rejection of [`BackgroundTasks`] when neither [`serve`](crate::serve) nor a
/// [`BackgroundTasksLayer`] runs in front of the handler: a `500 Internal Server Error` whose
/// body says how to add either.
///
/// [`BackgroundTasksLayer`]: crate::BackgroundTasksLayer
///
/// # Examples
///
/// ```
/// use axum::http::StatusCode;
/// use background_tasks_axum::MissingBackgroundTasksLayer;
///
/// let rejection = MissingBackgroundTasksLayer;
/// assert_eq!(rejection.status(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(rejection.body_text().contains(".layer(BackgroundTasksLayer::new(supervisor))"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "BackgroundTasks was extracted, but this app is neither run by background_tasks_axum::serve \
     nor under a BackgroundTasksLayer; run it with `serve(listener, app, supervisor)`, or add \
     `.layer(BackgroundTasksLayer::new(supervisor))` to the router after the routes that use \
     it, where `supervisor` is your background_tasks::TaskSupervisor"
)]
pub struct MissingBackgroundTasksLayer;

impl MissingBackgroundTasksLayer {
    /// The status of the response: `500 Internal Server Error`, since the server is
    /// misconfigured.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use background_tasks_axum::MissingBackgroundTasksLayer;
    ///
    /// assert_eq!(MissingBackgroundTasksLayer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The body of the response: what is missing and how to add it.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::MissingBackgroundTasksLayer;
    ///
    /// assert!(MissingBackgroundTasksLayer.body_text().contains("BackgroundTasksLayer"));
    /// ```
    #[must_use]
    pub fn body_text(&self) -> String {
        self.to_string()
    }
}

impl IntoResponse for MissingBackgroundTasksLayer {
    fn into_response(self) -> Response {
        (self.status(), self.body_text()).into_response()
    }
}
