//! The extractor that handlers spawn background tasks with.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use background_tasks::{TaskBuilder, TaskContext, TaskHandle, TaskSupervisor, TrackedFuture};

use crate::error::{BackgroundTaskError, MissingBackgroundTasksMiddleware};
use crate::gate::Gate;
use crate::request_data::RequestTasks;

/// Spawns supervised background tasks from an actix-web handler: an extractor for the
/// supervisor that [`BackgroundTasksMiddleware`](crate::BackgroundTasksMiddleware) registers.
///
/// Its methods are those of [`TaskSupervisor`] (see there for what each does), with a
/// [`BackgroundTaskError`] that answers `503` with `Retry-After` through `?`, plus
/// [`after_response`](Self::after_response), for work that starts once the response has been
/// sent. Without the middleware, extracting it fails with
/// [`MissingBackgroundTasksMiddleware`], a `500` that says how to register it;
/// `Option<BackgroundTasks>` gives `None` instead.
///
/// Its tasks run on the runtime of the actix worker that runs the handler (unless the
/// supervisor has a [`runtime`](background_tasks::SupervisorBuilder::runtime) of its own), and
/// [`serve`](crate::serve) keeps that worker running until the supervisor has shut down: a
/// task outlives its request and its connection, and the shutdown drains, cancels, aborts and
/// reports it like any other.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_web::{App, HttpResponse, web};
/// use background_tasks_actix::{
///     BackgroundTaskError, BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor,
/// };
///
/// async fn sign_up(tasks: BackgroundTasks) -> Result<HttpResponse, BackgroundTaskError> {
///     // Outlives the request; shutdown waits for it.
///     tasks.task("welcome-mail").spawn(async {
///         tokio::time::sleep(Duration::from_millis(100)).await;
///     })?;
///     // Starts once the response has been sent.
///     tasks.after_response(async { tracing::info!("signed up") })?;
///     Ok(HttpResponse::Created().finish())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
/// let app = App::new()
///     .wrap(BackgroundTasksMiddleware::new(supervisor.clone()))
///     .route("/sign-up", web::post().to(sign_up));
/// # }
/// ```
#[derive(Clone)]
pub struct BackgroundTasks {
    /// Opened once the response has been sent or dropped: the gate of after-response tasks,
    /// which also holds the supervisor, so that cloning the extractor for each request touches
    /// one reference count.
    sent: Gate,
}

impl BackgroundTasks {
    /// An extractor value outside of any request, for calling a handler directly in a test:
    /// there is no response to wait for, so [`after_response`](Self::after_response) tasks
    /// start at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTasks, TaskSupervisor};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::new();
    /// let tasks = BackgroundTasks::new(supervisor.clone());
    /// tasks.after_response(async {}).unwrap();
    /// assert_eq!(supervisor.shutdown().await.completed(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn new(supervisor: TaskSupervisor) -> Self {
        Self {
            sent: Gate::open(supervisor),
        }
    }

    /// The value of the extractor in a request; `sent` is opened by the response body.
    pub(crate) fn for_request(sent: Gate) -> Self {
        Self { sent }
    }

    /// [`TaskSupervisor::spawn`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let handle = tasks.spawn(async { /* ... */ })?;
    ///     Ok(format!("task {}", handle.id()))
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// A [`BackgroundTaskError`] (a `503` response) once the supervisor is shutting down or
    /// when it runs `max_tasks` tasks. The future is then dropped without being polled.
    ///
    /// # Panics
    ///
    /// As [`TaskSupervisor::spawn`].
    #[track_caller]
    #[inline]
    pub fn spawn<F>(&self, future: F) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.sent.supervisor().spawn(future)?)
    }

    /// [`TaskSupervisor::spawn_with`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.spawn_with(|ctx| async move { ctx.shutdown_started().await })?;
    ///     Ok("started")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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
        Ok(self.sent.supervisor().spawn_with(task)?)
    }

    /// [`TaskSupervisor::spawn_blocking`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.spawn_blocking(|| std::thread::sleep(std::time::Duration::from_millis(10)))?;
    ///     Ok("started")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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
        Ok(self.sent.supervisor().spawn_blocking(function)?)
    }

    /// [`TaskSupervisor::spawn_local`]: spawns `future`, which need not be `Send`, on the
    /// worker that runs the handler, answering `503` through `?`.
    ///
    /// Each actix worker runs its own single-thread runtime, which ends with the worker;
    /// [`serve`](crate::serve) stops the workers only once the supervisor has shut down, so a
    /// local task is drained, cancelled and aborted as any other. A server stopped without
    /// `serve` drops it with its worker, and the supervisor reports it as
    /// [`FailureKind::Dropped`](background_tasks::FailureKind::Dropped).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     let session = Rc::new("worker-local state"); // not `Send`
    ///     tasks.spawn_local(async move { drop(session) })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`TaskSupervisor::spawn_local`]: never in a handler, which actix runs on a
    /// `LocalSet`.
    #[track_caller]
    #[inline]
    pub fn spawn_local<F>(&self, future: F) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        Ok(self.sent.supervisor().spawn_local(future)?)
    }

    /// [`TaskSupervisor::spawn_local_with`]: spawns the future that `task` builds from its
    /// [`TaskContext`], which need not be `Send`, on the worker that runs the handler; see
    /// [`spawn_local`](Self::spawn_local).
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.spawn_local_with(|ctx| async move { ctx.shutdown_started().await })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`spawn`](Self::spawn).
    ///
    /// # Panics
    ///
    /// As [`spawn_local`](Self::spawn_local).
    #[track_caller]
    #[inline]
    pub fn spawn_local_with<F, Fut>(
        &self,
        task: F,
    ) -> Result<TaskHandle<Fut::Output>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        Ok(self.sent.supervisor().spawn_local_with(task)?)
    }

    /// [`TaskSupervisor::track_future`]: tracks `future`, which the handler awaits itself, as
    /// a supervised task, answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn save(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     let written = tasks.track_future(async { /* write to the store */ "saved" })?;
    ///     Ok(written.await)
    /// }
    /// # let _ = actix_web::web::post().to(save);
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
        Ok(self.sent.supervisor().track_future(future)?)
    }

    /// [`TaskSupervisor::track_future_with`]: tracks the future that `task` builds from its
    /// [`TaskContext`], which the handler awaits itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn export(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let export = tasks.track_future_with(|ctx| async move { ctx.is_cancelled() })?;
    ///     Ok(format!("cut short: {}", export.await))
    /// }
    /// # let _ = actix_web::web::post().to(export);
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
        Ok(self.sent.supervisor().track_future_with(task)?)
    }

    /// A builder for a named task: [`TaskSupervisor::task`], plus
    /// [`after_response`](BackgroundTaskBuilder::after_response).
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("resize-avatar").spawn_blocking(|| { /* ... */ })?;
    ///     tasks.task("audit-log").after_response(async { /* ... */ })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    #[inline]
    pub fn task(&self, name: impl Into<Cow<'static, str>>) -> BackgroundTaskBuilder<'_> {
        BackgroundTaskBuilder {
            builder: self.sent.supervisor().task(name),
            sent: &self.sent,
        }
    }

    /// Schedules `future` to run once the response has been sent, for work the client should
    /// not wait for; the task is named `after-response`.
    ///
    /// Exactly one supervised task is spawned, at once, so shutdown waits for it from this
    /// call on. It starts `future` when actix has taken the last chunk of the response body
    /// (it may still be writing it to the socket), or when the response is dropped (the
    /// client went away, or the worker closed the connection). Called once the response is
    /// already gone, it starts `future` at once. If the response is still not gone when the
    /// supervisor's shutdown reaches its cancel phase, the task ends without running `future`
    /// and logs a warning.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn checkout(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.after_response(async { /* update the recommendations */ })?;
    ///     Ok("thank you")
    /// }
    /// # let _ = actix_web::web::post().to(checkout);
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
    /// use background_tasks_actix::BackgroundTasks;
    ///
    /// async fn running(tasks: BackgroundTasks) -> String {
    ///     tasks.supervisor().len().to_string()
    /// }
    /// # let _ = actix_web::web::get().to(running);
    /// ```
    #[inline]
    #[must_use]
    pub fn supervisor(&self) -> &TaskSupervisor {
        self.sent.supervisor()
    }
}

/// The name of after-response tasks spawned without one.
const AFTER_RESPONSE: &str = "after-response";

impl fmt::Debug for BackgroundTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackgroundTasks")
            .field("supervisor", self.supervisor())
            .field("response_sent", &self.sent.is_open())
            .finish()
    }
}

impl FromRequest for BackgroundTasks {
    type Error = MissingBackgroundTasksMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    #[inline]
    fn from_request(request: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The middleware's request-scoped app data: the same for a clone of the request, and
        // for as long as any clone lives.
        let tasks = request.app_data::<RequestTasks>().map(RequestTasks::tasks);
        ready(tasks.ok_or_else(|| {
            tracing::error!("{MissingBackgroundTasksMiddleware}");
            MissingBackgroundTasksMiddleware
        }))
    }
}

/// Spawns a named task, from [`BackgroundTasks::task`]: the core's [`TaskBuilder`] (see there
/// for each method) with errors that answer `503`, plus
/// [`after_response`](Self::after_response).
///
/// # Examples
///
/// ```
/// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
///
/// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
///     let handle = tasks.task("checksum").spawn_blocking(|| 42)?;
///     drop(handle); // detached: it runs on, and shutdown waits for it
///     Ok("ok")
/// }
/// # let _ = actix_web::web::post().to(handler);
/// ```
#[must_use = "a BackgroundTaskBuilder does nothing until one of its spawn methods is called"]
pub struct BackgroundTaskBuilder<'a> {
    builder: TaskBuilder<'a>,
    sent: &'a Gate,
}

impl BackgroundTaskBuilder<'_> {
    /// Ends the task if it runs longer than `timeout`; see [`TaskBuilder::timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks
    ///         .task("call-upstream")
    ///         .timeout(Duration::from_secs(30))
    ///         .spawn_with(|ctx| async move { ctx.cancelled().await })?;
    ///     Ok("accepted")
    /// }
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
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("import-row").spawn_when_ready(async { /* ... */ }).await?;
    ///     Ok("accepted")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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

    /// [`TaskBuilder::spawn`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("ping").spawn(async {})?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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

    /// [`TaskBuilder::spawn_with`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("poll").spawn_with(|ctx| async move { ctx.shutdown_started().await })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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

    /// [`TaskBuilder::spawn_blocking`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("compress").spawn_blocking(|| { /* ... */ })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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

    /// [`TaskBuilder::spawn_blocking_with`], answering `503` through `?`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("scan").spawn_blocking_with(|ctx| {
    ///         while !ctx.is_cancelled() { /* one unit of work */ break; }
    ///     })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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

    /// [`TaskBuilder::spawn_local`]: spawns `future`, which need not be `Send`, as a named
    /// task on the worker that runs the handler; see [`BackgroundTasks::spawn_local`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     let session = Rc::new("worker-local state");
    ///     tasks.task("touch-session").spawn_local(async move { drop(session) })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn_local`].
    #[track_caller]
    #[inline]
    pub fn spawn_local<F>(self, future: F) -> Result<TaskHandle<F::Output>, BackgroundTaskError>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        Ok(self.builder.spawn_local(future)?)
    }

    /// [`TaskBuilder::spawn_local_with`]: spawns the future that `task` builds from its
    /// [`TaskContext`], which need not be `Send`, as a named task on the worker that runs the
    /// handler; see [`BackgroundTasks::spawn_local`].
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("poll").spawn_local_with(|ctx| async move { ctx.shutdown_started().await })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
    /// ```
    ///
    /// # Errors
    ///
    /// As [`BackgroundTasks::spawn`].
    ///
    /// # Panics
    ///
    /// As [`BackgroundTasks::spawn_local`].
    #[track_caller]
    #[inline]
    pub fn spawn_local_with<F, Fut>(
        self,
        task: F,
    ) -> Result<TaskHandle<Fut::Output>, BackgroundTaskError>
    where
        F: FnOnce(TaskContext) -> Fut,
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        Ok(self.builder.spawn_local_with(task)?)
    }

    /// [`TaskBuilder::track_future`]: tracks `future`, which the handler awaits itself, as a
    /// named task.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn save(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     Ok(tasks.task("save-order").track_future(async { "saved" })?.await)
    /// }
    /// # let _ = actix_web::web::post().to(save);
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

    /// [`TaskBuilder::track_future_with`]: tracks the future that `task` builds from its
    /// [`TaskContext`], which the handler awaits itself, as a named task.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    ///
    /// async fn export(tasks: BackgroundTasks) -> Result<String, BackgroundTaskError> {
    ///     let export = tasks.task("export").track_future_with(|ctx| async move { ctx.is_cancelled() })?;
    ///     Ok(format!("cut short: {}", export.await))
    /// }
    /// # let _ = actix_web::web::post().to(export);
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
    /// # use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
    /// async fn handler(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
    ///     tasks.task("audit-log").after_response(async { /* ... */ })?;
    ///     Ok("ok")
    /// }
    /// # let _ = actix_web::web::post().to(handler);
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
        let sent = self.sent.clone();
        let handle = self.builder.spawn_with(move |ctx| async move {
            // Biased towards the gate: a response that is gone runs its tasks even when the
            // cancel phase has begun too.
            let opened = tokio::select! {
                biased;
                () = sent.opened() => true,
                () = ctx.cancelled() => false,
            };
            drop(sent);
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
