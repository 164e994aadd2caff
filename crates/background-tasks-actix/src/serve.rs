//! Running an actix-web `HttpServer` with one shutdown budget: signal, request drain, task
//! shutdown.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Server, Service, ServiceFactory};
use actix_web::{Error, HttpServer};
use background_tasks::{ShutdownReport, TaskSupervisor};
use tokio::time::{Instant, sleep, timeout};

use crate::signals::{BoxSignal, Event, Signals};

/// Runs an actix-web [`HttpServer`] until SIGINT or SIGTERM, then shuts down within one budget:
/// the requests first, then the `supervisor`'s background tasks, whose [`ShutdownReport`] it
/// returns.
///
/// It turns actix's own signal handling off ([`HttpServer::disable_signals`]) rather than
/// racing it, and returns a [`Serve`] builder that runs the server when awaited. On the
/// shutdown signal (by default SIGINT or SIGTERM, Ctrl-C on Windows):
///
/// 1. the server keeps accepting for [`drain_delay`](Serve::drain_delay) (default zero), then
///    stops accepting through its [`ServerHandle`](actix_web::dev::ServerHandle) and lets the
///    requests in flight finish (actix's graceful worker shutdown, which checks once a second
///    whether its connections have closed);
/// 2. it waits up to [`request_drain_timeout`](Serve::request_drain_timeout) for the workers
///    to stop; it sets actix's [`shutdown_timeout`](HttpServer::shutdown_timeout) to the same
///    time, rounded up to whole seconds, after which actix drops the connections still open;
/// 3. it shuts the supervisor down ([`TaskSupervisor::shutdown`]: drain, cancel, abort) and
///    returns its report, which the supervisor logs;
/// 4. a force signal at any point (by default a second SIGINT or SIGTERM) skips to the end:
///    the workers are told to stop at once and [`TaskSupervisor::shutdown_now`] aborts the
///    tasks; workers still finishing a request are left to the process's exit.
///
/// A WebSocket (actix-ws) stays one of actix's connections, unlike an upgraded connection
/// under hyper: its worker counts it, so step 2 waits for it, and at the request drain timeout
/// actix drops it with the worker, together with the worker's runtime and what the handler
/// spawned there (actix-ws's session loop, with `actix_web::rt::spawn`). Nothing of it
/// outlives `serve`, but its client gets no Close frame, and an open WebSocket makes every
/// shutdown wait the whole request drain timeout; the supervisor's shutdown starts only after
/// it, so a session loop run as a supervised task hears
/// [`TaskContext::shutdown_started`](background_tasks::TaskContext::shutdown_started) only
/// once its connection is gone.
///
/// So the whole shutdown takes at most `drain_delay + request_drain_timeout +
/// shutdown_timeout + cancel_grace`, plus a few milliseconds. If the server stops on its own
/// (app code called [`ServerHandle::stop`](actix_web::dev::ServerHandle::stop)), the supervisor
/// is shut down the same way.
///
/// The supervisor must spawn onto a runtime that outlives the workers: build it with
/// [`runtime`](background_tasks::SupervisorBuilder::runtime) (see
/// [`BackgroundTasksMiddleware`](crate::BackgroundTasksMiddleware)); `serve` fails with
/// [`ServeError::MissingRuntime`] otherwise.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_web::{App, HttpServer, web};
/// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::builder()
///     .runtime(tokio::runtime::Handle::current())
///     .shutdown_timeout(Duration::from_secs(5))
///     .build();
/// let middleware = BackgroundTasksMiddleware::new(supervisor.clone());
/// let server = HttpServer::new(move || {
///     App::new()
///         .wrap(middleware.clone())
///         .route("/", web::get().to(|| async { "hello" }))
/// })
/// .workers(1)
/// .bind(("127.0.0.1", 0))?;
///
/// let report = serve(server, supervisor)
///     .request_drain_timeout(Duration::from_secs(10))
/// #   .shutdown_signal(async {})
///     .await?;
/// println!("shutdown report: {report}");
/// # Ok(())
/// # }
/// ```
pub fn serve<F, I, S, B>(server: HttpServer<F, I, S, B>, supervisor: TaskSupervisor) -> Serve
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request> + 'static,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addrs = server.addrs();
    Serve {
        start: Box::new(move |drain_seconds| {
            server
                .disable_signals()
                .shutdown_timeout(drain_seconds)
                .run()
        }),
        addrs,
        supervisor,
        shutdown_signal: None,
        force_shutdown_signal: None,
        drain_delay: Duration::ZERO,
        request_drain_timeout: Serve::DEFAULT_REQUEST_DRAIN_TIMEOUT,
    }
}

/// The server that [`serve`] configures; awaiting it runs the server until it and its
/// background tasks have shut down.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use actix_web::{App, HttpServer};
/// use background_tasks_actix::{TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::builder()
///     .runtime(tokio::runtime::Handle::current())
///     .build();
/// let server = HttpServer::new(|| App::new()).workers(1).bind(("127.0.0.1", 0))?;
/// let report = serve(server, supervisor)
///     .shutdown_signal(async { /* e.g. a message from an admin endpoint */ })
///     .request_drain_timeout(Duration::from_secs(30))
///     .await?;
/// assert!(report.is_clean());
/// # Ok(())
/// # }
/// ```
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve {
    /// Runs the `HttpServer` without its signal handling, with actix's shutdown timeout in
    /// whole seconds.
    start: Box<dyn FnOnce(u64) -> Server>,
    addrs: Vec<SocketAddr>,
    supervisor: TaskSupervisor,
    shutdown_signal: Option<BoxSignal>,
    force_shutdown_signal: Option<BoxSignal>,
    drain_delay: Duration,
    request_drain_timeout: Duration,
}

impl Serve {
    /// The default of [`request_drain_timeout`](Self::request_drain_timeout): 10 seconds.
    pub const DEFAULT_REQUEST_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts the graceful shutdown when `signal` resolves, instead of on SIGINT or SIGTERM
    /// (Ctrl-C on Windows). Unless a [`force_shutdown_signal`](Self::force_shutdown_signal) is
    /// set too, nothing then forces the abort: the budgets alone bound the shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// # use actix_web::{App, HttpServer};
    /// # use background_tasks_actix::{TaskSupervisor, serve};
    /// # fn run(supervisor: TaskSupervisor) -> std::io::Result<()> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, supervisor).shutdown_signal(async move { let _ = stopped.await; });
    /// # Ok(())
    /// # }
    /// ```
    pub fn shutdown_signal<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown_signal = Some(Box::pin(signal));
        self
    }

    /// Skips what is left of the shutdown when `signal` resolves, at any point. Default: a
    /// second SIGINT or SIGTERM (Ctrl-C on Windows) when the shutdown signal is the default
    /// one, and nothing otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_web::{App, HttpServer};
    /// # use background_tasks_actix::{TaskSupervisor, serve};
    /// # fn run(supervisor: TaskSupervisor) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, supervisor)
    ///     .shutdown_signal(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .force_shutdown_signal(tokio::time::sleep(Duration::from_secs(60)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn force_shutdown_signal<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.force_shutdown_signal = Some(Box::pin(signal));
        self
    }

    /// How long to keep accepting after the shutdown signal, so that a load balancer notices
    /// before the listener closes. Default: zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_web::{App, HttpServer};
    /// # use background_tasks_actix::{TaskSupervisor, serve};
    /// # fn run(supervisor: TaskSupervisor) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, supervisor).drain_delay(Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// How long requests in flight get to finish once the server stopped accepting; it also
    /// sets actix's [`HttpServer::shutdown_timeout`], rounded up to whole seconds, replacing
    /// the one set on the server. Default: 10 seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_web::{App, HttpServer};
    /// # use background_tasks_actix::{TaskSupervisor, serve};
    /// # fn run(supervisor: TaskSupervisor) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, supervisor).request_drain_timeout(Duration::from_secs(30));
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_drain_timeout(mut self, timeout: Duration) -> Self {
        self.request_drain_timeout = timeout;
        self
    }
}

impl fmt::Debug for Serve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("addrs", &self.addrs)
            .field("supervisor", &self.supervisor)
            .field("drain_delay", &self.drain_delay)
            .field("request_drain_timeout", &self.request_drain_timeout)
            .finish_non_exhaustive()
    }
}

/// How long to let the server act on a stop at once before going on without it.
const STOP_WAIT: Duration = Duration::from_millis(100);

/// A run of the server, from the moment it was started.
struct Running {
    server: Server,
    supervisor: TaskSupervisor,
    signals: Signals,
    drain_delay: Duration,
    request_drain_timeout: Duration,
}

impl Running {
    async fn run(mut self) -> Result<ShutdownReport, ServeError> {
        let handle = self.server.handle();
        // Serving, until a signal, or until the server stops on its own.
        let event = tokio::select! {
            biased;
            event = self.signals.first() => Some(event),
            result = &mut self.server => {
                result.map_err(ServeError::Server)?;
                None
            }
        };
        let started = Instant::now();
        match event {
            Some(Event::Force) => return Ok(self.force(&handle, false).await),
            Some(Event::Shutdown) => {
                if let Some(report) = self.drain_requests(&handle).await {
                    return Ok(report);
                }
            }
            None => tracing::info!("the server stopped; shutting down background tasks"),
        }

        // The supervisor's own phased shutdown, which logs its report.
        let report = tokio::select! {
            biased;
            () = self.signals.force() => {
                tracing::warn!("force shutdown signal received: aborting background tasks now");
                self.supervisor.shutdown_now().await
            }
            report = self.supervisor.shutdown() => report,
        };
        tracing::info!("server shut down in {:?}", started.elapsed());
        Ok(report)
    }

    /// The drain delay, then the graceful stop of the workers; `Some` when a force signal cut
    /// it short.
    async fn drain_requests(
        &mut self,
        handle: &actix_web::dev::ServerHandle,
    ) -> Option<ShutdownReport> {
        let (drain_delay, request_drain_timeout) = (self.drain_delay, self.request_drain_timeout);
        tracing::info!("shutdown signal received; accepting for {drain_delay:?} more");
        let mut stopped = false;
        tokio::select! {
            biased;
            () = self.signals.force() => return Some(self.force(handle, false).await),
            result = &mut self.server => { log_server_end(result); stopped = true; }
            () = sleep(drain_delay) => {}
        }
        if stopped {
            return None;
        }
        // The stop command is sent now; the server future acts on it.
        drop(handle.stop(true));
        tracing::info!(
            "stopped accepting; waiting up to {request_drain_timeout:?} for requests in flight"
        );
        let drain_started = Instant::now();
        tokio::select! {
            biased;
            () = self.signals.force() => return Some(self.force(handle, true).await),
            result = &mut self.server => {
                log_server_end(result);
                tracing::info!(
                    "workers stopped after {:?}; shutting down background tasks",
                    drain_started.elapsed()
                );
            }
            () = sleep(request_drain_timeout) => tracing::warn!(
                "requests still in flight after the request drain timeout of \
                 {request_drain_timeout:?}; actix drops their connections; shutting down \
                 background tasks"
            ),
        }
        None
    }

    /// Tells the workers to stop now and aborts every task.
    async fn force(
        &mut self,
        handle: &actix_web::dev::ServerHandle,
        stopping: bool,
    ) -> ShutdownReport {
        tracing::warn!(
            "force shutdown signal received: stopping the workers and aborting background tasks now"
        );
        if !stopping {
            drop(handle.stop(false));
            // The server acts on the stop when polled; it does not get long.
            let _ = timeout(STOP_WAIT, &mut self.server).await;
        }
        self.supervisor.shutdown_now().await
    }
}

fn log_server_end(result: io::Result<()>) {
    if let Err(error) = result {
        tracing::warn!("the server stopped with an error: {error}");
    }
}

impl IntoFuture for Serve {
    type Output = Result<ShutdownReport, ServeError>;
    type IntoFuture = ServeFuture;

    /// Starts the server and installs the SIGINT and SIGTERM handlers at once, so that a
    /// signal arriving before the first poll starts the graceful shutdown rather than killing
    /// the process.
    ///
    /// # Panics
    ///
    /// When called outside of a Tokio runtime, as actix's `HttpServer::run`.
    fn into_future(self) -> Self::IntoFuture {
        let Serve {
            start,
            addrs,
            supervisor,
            shutdown_signal,
            force_shutdown_signal,
            drain_delay,
            request_drain_timeout,
        } = self;
        let started = (|| {
            if supervisor.runtime().is_none() {
                return Err(ServeError::MissingRuntime);
            }
            if addrs.is_empty() {
                return Err(ServeError::NotBound);
            }
            let signals = Signals::new(shutdown_signal, force_shutdown_signal)
                .map_err(ServeError::Signals)?;
            // Whole seconds, rounded up: actix counts its shutdown timeout in seconds.
            let seconds = request_drain_timeout
                .as_secs()
                .saturating_add(u64::from(request_drain_timeout.subsec_nanos() != 0));
            Ok(Running {
                server: start(seconds),
                supervisor,
                signals,
                drain_delay,
                request_drain_timeout,
            })
        })();
        ServeFuture {
            inner: Box::pin(async move { started?.run().await }),
        }
    }
}

/// The future of an awaited [`Serve`]: resolves once the server and its background tasks
/// have shut down.
///
/// # Examples
///
/// ```
/// use std::future::IntoFuture;
/// use actix_web::{App, HttpServer};
/// use background_tasks_actix::{ServeFuture, TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::builder()
///     .runtime(tokio::runtime::Handle::current())
///     .build();
/// let server = HttpServer::new(|| App::new()).workers(1).bind(("127.0.0.1", 0))?;
/// let serving: ServeFuture = serve(server, supervisor).shutdown_signal(async {}).into_future();
/// let report = tokio::spawn(serving).await??;
/// # Ok(())
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping it leaves the workers running and does not shut the supervisor down: use a
/// shutdown signal instead.
#[must_use = "futures do nothing unless polled"]
pub struct ServeFuture {
    inner: Pin<Box<dyn Future<Output = Result<ShutdownReport, ServeError>> + Send>>,
}

impl Future for ServeFuture {
    type Output = Result<ShutdownReport, ServeError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ServeFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeFuture").finish_non_exhaustive()
    }
}

/// Why [`serve`] could not run.
///
/// # Examples
///
/// ```
/// use background_tasks_actix::ServeError;
///
/// fn exit_code(error: &ServeError) -> u8 {
///     match error {
///         ServeError::MissingRuntime | ServeError::NotBound => 2, // a bug in main
///         _ => 1,
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The supervisor spawns onto the caller's runtime, which for a handler is its worker's,
    /// and that runtime stops with the worker.
    #[error(
        "the supervisor has no runtime of its own, so tasks spawned from handlers would die \
         with their actix worker; build it with \
         `TaskSupervisor::builder().runtime(tokio::runtime::Handle::current())` in main"
    )]
    MissingRuntime,
    /// The `HttpServer` is bound to no address.
    #[error(
        "the HttpServer is bound to no address; call `.bind(...)` or `.listen(...)` on it \
         before `serve`"
    )]
    NotBound,
    /// The handlers of the default shutdown signals (SIGINT and SIGTERM, or Ctrl-C on Windows)
    /// could not be installed.
    #[error(
        "could not install the SIGINT and SIGTERM handlers that start the graceful shutdown; \
         pass a future of your own to `Serve::shutdown_signal` instead"
    )]
    Signals(#[source] io::Error),
    /// The actix server failed, for example when a worker could not start.
    #[error("the actix-web server failed")]
    Server(#[source] io::Error),
}
