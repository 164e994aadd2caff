//! Running an actix-web `HttpServer` with one shutdown budget: signal, request drain, task
//! shutdown.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Service, ServiceFactory};
use actix_web::{Error, HttpServer};
use background_tasks::{ShutdownReport, TaskSupervisor};
use tokio::time::{Instant, sleep, timeout};

use crate::in_flight::InFlight;
use crate::middleware::BackgroundTasksMiddleware;
use crate::signals::{BoxSignal, Event, Signals};

/// Runs an actix-web [`HttpServer`] until SIGINT or SIGTERM, then shuts down within one budget:
/// the requests first, then the background tasks of `middleware`'s supervisor, whose
/// [`ShutdownReport`] it returns, and only then the workers.
///
/// `middleware` is the [`BackgroundTasksMiddleware`] that wraps the server's `App`s (a clone
/// of it): it counts their requests in flight, which is how `serve` knows when they have
/// drained. `serve` turns actix's own signal handling off ([`HttpServer::disable_signals`])
/// rather than racing it, and returns a [`Serve`] builder that runs the server when awaited.
/// On the shutdown signal (by default SIGINT or SIGTERM, Ctrl-C on Windows):
///
/// 1. the server keeps accepting for [`drain_delay`](Serve::drain_delay) (default zero), then
///    stops accepting ([`ServerHandle::pause`](actix_web::dev::ServerHandle::pause)); its
///    workers keep running, and from then on its responses close their connections
///    (`Connection: close`);
/// 2. it waits up to [`request_drain_timeout`](Serve::request_drain_timeout) for the requests
///    in flight to finish (until their response body has been sent);
/// 3. it shuts the supervisor down ([`TaskSupervisor::shutdown`]: drain, cancel, abort) while
///    the workers still run, so that the tasks spawned from handlers, which run on their
///    worker's runtime, are drained, cancelled and aborted like any other, and are in the
///    report;
/// 4. it stops the workers at once
///    ([`ServerHandle::stop(false)`](actix_web::dev::ServerHandle::stop)), which drops the
///    connections still open (idle keep-alive ones, and requests past the request drain
///    timeout) and the workers' runtimes, then returns the report, which the supervisor logged;
///    a task left on a worker's runtime is one the report lists as abandoned;
/// 5. a force signal at any point (by default a second SIGINT or SIGTERM) skips to the end:
///    [`TaskSupervisor::shutdown_now`] aborts the tasks, then the workers stop at once.
///
/// A WebSocket (actix-ws) under the middleware is a request in flight until its response
/// body, the socket, ends: step 2 waits for it, and at the request drain timeout it stays open
/// through step 3 and is dropped with its worker at step 4, together with what the handler
/// spawned on the worker's runtime outside the supervisor (actix-ws's session loop, with
/// `actix_web::rt::spawn`). Nothing of it outlives `serve`, but its client gets no Close
/// frame, and an open WebSocket makes every shutdown wait the whole request drain timeout; a
/// session loop run as a supervised task hears
/// [`TaskContext::shutdown_started`](background_tasks::TaskContext::shutdown_started) only at
/// step 3. Requests on routes the middleware does not wrap are not counted: step 2 does not
/// wait for them.
///
/// So the whole shutdown takes at most `drain_delay + request_drain_timeout +
/// shutdown_timeout + cancel_grace`, plus a few milliseconds. If the server stops on its own
/// (app code called [`ServerHandle::stop`](actix_web::dev::ServerHandle::stop)), actix has
/// drained its connections and stopped its workers (waiting up to the request drain timeout,
/// rounded up to whole seconds, set as actix's
/// [`shutdown_timeout`](HttpServer::shutdown_timeout)), and the tasks that were still running
/// on them are gone, reported as [`Dropped`](background_tasks::FailureKind::Dropped); the
/// supervisor is then shut down the same way.
///
/// Tasks spawned outside a worker (in `main`, at startup, from a task on another runtime) run
/// where they were spawned, or on the supervisor's
/// [`runtime`](background_tasks::SupervisorBuilder::runtime) when one is set.
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
///     .shutdown_timeout(Duration::from_secs(5))
///     .build();
/// let middleware = BackgroundTasksMiddleware::new(supervisor);
/// let server = HttpServer::new({
///     let middleware = middleware.clone();
///     move || {
///         App::new()
///             .wrap(middleware.clone())
///             .route("/", web::get().to(|| async { "hello" }))
///     }
/// })
/// .workers(1)
/// .bind(("127.0.0.1", 0))?;
///
/// let report = serve(server, middleware)
///     .request_drain_timeout(Duration::from_secs(10))
/// #   .shutdown_signal(async {})
///     .await?;
/// println!("shutdown report: {report}");
/// # Ok(())
/// # }
/// ```
pub fn serve<F, I, S, B>(
    server: HttpServer<F, I, S, B>,
    middleware: BackgroundTasksMiddleware,
) -> Serve
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
        supervisor: middleware.supervisor().clone(),
        in_flight: Arc::clone(middleware.in_flight()),
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
/// use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
/// let server = HttpServer::new({
///     let middleware = middleware.clone();
///     move || App::new().wrap(middleware.clone())
/// })
/// .workers(1)
/// .bind(("127.0.0.1", 0))?;
/// let report = serve(server, middleware)
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
    start: Box<dyn FnOnce(u64) -> actix_web::dev::Server>,
    addrs: Vec<SocketAddr>,
    supervisor: TaskSupervisor,
    in_flight: Arc<InFlight>,
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
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, serve};
    /// # fn run(middleware: BackgroundTasksMiddleware) -> std::io::Result<()> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, middleware).shutdown_signal(async move { let _ = stopped.await; });
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
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, serve};
    /// # fn run(middleware: BackgroundTasksMiddleware) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, middleware)
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
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, serve};
    /// # fn run(middleware: BackgroundTasksMiddleware) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, middleware).drain_delay(Duration::from_secs(5));
    /// # Ok(())
    /// # }
    /// ```
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// How long requests in flight get to finish once the server stopped accepting. It also
    /// sets actix's [`HttpServer::shutdown_timeout`], rounded up to whole seconds, replacing
    /// the one set on the server, for when the server stops on its own. Default: 10 seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use actix_web::{App, HttpServer};
    /// # use background_tasks_actix::{BackgroundTasksMiddleware, serve};
    /// # fn run(middleware: BackgroundTasksMiddleware) -> std::io::Result<()> {
    /// let server = HttpServer::new(|| App::new()).bind(("127.0.0.1", 0))?;
    /// let serving = serve(server, middleware).request_drain_timeout(Duration::from_secs(30));
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
            .field("in_flight", &self.in_flight)
            .field("drain_delay", &self.drain_delay)
            .field("request_drain_timeout", &self.request_drain_timeout)
            .finish_non_exhaustive()
    }
}

/// How long to let the server act on a stop at once before going on without it: it sends the
/// workers their stop and joins its accept thread, which takes milliseconds.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// The actix server, polled until it ends, and not after.
struct Server {
    server: actix_web::dev::Server,
    ended: bool,
}

impl Server {
    /// Resolves when the server has ended, with how it ended (`Ok` at once if it has
    /// already).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the server goes on where it was.
    async fn ended(&mut self) -> io::Result<()> {
        if self.ended {
            return Ok(());
        }
        let result = (&mut self.server).await;
        self.ended = true;
        result
    }

    /// Stops the workers at once, dropping their connections and runtimes.
    async fn stop_workers(&mut self) {
        if self.ended {
            return;
        }
        // The stop command is sent now; the server future acts on it.
        drop(self.server.handle().stop(false));
        match timeout(STOP_WAIT, self.ended()).await {
            Ok(result) => log_server_end(result),
            Err(_) => tracing::warn!(
                "the server did not act on its stop within {STOP_WAIT:?}; going on without it"
            ),
        }
    }
}

/// A run of the server, from the moment it was started.
struct Running {
    server: Server,
    supervisor: TaskSupervisor,
    in_flight: Arc<InFlight>,
    signals: Signals,
    drain_delay: Duration,
    request_drain_timeout: Duration,
}

impl Running {
    async fn run(mut self) -> Result<ShutdownReport, ServeError> {
        // Serving, until a signal, or until the server stops on its own.
        let event = tokio::select! {
            biased;
            event = self.signals.first() => Some(event),
            result = self.server.ended() => {
                result.map_err(ServeError::Server)?;
                None
            }
        };
        let started = Instant::now();
        match event {
            Some(Event::Force) => return Ok(self.force().await),
            Some(Event::Shutdown) => {
                if let Some(report) = self.drain_requests().await {
                    return Ok(report);
                }
            }
            None => tracing::info!(
                "the server stopped, and its workers with it; shutting down background tasks"
            ),
        }

        // The supervisor's own phased shutdown, which logs its report, while the workers and
        // the tasks on their runtimes still run.
        let report = tokio::select! {
            biased;
            () = self.signals.force() => {
                tracing::warn!("force shutdown signal received: aborting background tasks now");
                self.supervisor.shutdown_now().await
            }
            report = self.supervisor.shutdown() => report,
        };
        // The report is complete: what is left on the workers' runtimes is in it.
        self.server.stop_workers().await;
        tracing::info!("server shut down in {:?}", started.elapsed());
        Ok(report)
    }

    /// The drain delay, then the drain of the requests in flight; `Some` when a force signal
    /// cut it short.
    async fn drain_requests(&mut self) -> Option<ShutdownReport> {
        let (drain_delay, request_drain_timeout) = (self.drain_delay, self.request_drain_timeout);
        tracing::info!("shutdown signal received; accepting for {drain_delay:?} more");
        tokio::select! {
            biased;
            () = self.signals.force() => return Some(self.force().await),
            result = self.server.ended() => {
                log_server_end(result);
                return None;
            }
            () = sleep(drain_delay) => {}
        }
        // The pause command is sent now; the server future acts on it.
        drop(self.server.server.handle().pause());
        tracing::info!(
            "stopped accepting; waiting up to {request_drain_timeout:?} for {} requests in flight",
            self.in_flight.len()
        );
        let drain_started = Instant::now();
        let in_flight = Arc::clone(&self.in_flight);
        tokio::select! {
            biased;
            () = self.signals.force() => return Some(self.force().await),
            () = in_flight.drain() => tracing::info!(
                "requests drained after {:?}; shutting down background tasks",
                drain_started.elapsed()
            ),
            result = self.server.ended() => {
                log_server_end(result);
                tracing::info!("the server stopped, and its workers with it; shutting down background tasks");
            }
            () = sleep(request_drain_timeout) => tracing::warn!(
                "{} requests still in flight after the request drain timeout of \
                 {request_drain_timeout:?}; their connections are dropped when the workers \
                 stop, after the background tasks; shutting down background tasks",
                in_flight.len()
            ),
        }
        None
    }

    /// Aborts every task, then stops the workers at once.
    async fn force(&mut self) -> ShutdownReport {
        tracing::warn!(
            "force shutdown signal received: aborting background tasks and stopping the workers now"
        );
        // Aborted first, on the workers' runtimes that still run, so that they are reported
        // as aborted rather than dropped with a worker.
        let report = self.supervisor.shutdown_now().await;
        self.server.stop_workers().await;
        report
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
            in_flight,
            shutdown_signal,
            force_shutdown_signal,
            drain_delay,
            request_drain_timeout,
        } = self;
        let started = (|| {
            if addrs.is_empty() {
                return Err(ServeError::NotBound);
            }
            let signals = Signals::new(shutdown_signal, force_shutdown_signal)
                .map_err(ServeError::Signals)?;
            // Whole seconds, rounded up: actix counts its shutdown timeout in seconds.
            let seconds = request_drain_timeout
                .as_secs()
                .saturating_add(u64::from(request_drain_timeout.subsec_nanos() != 0));
            // Before the workers start, which read it when they build their `App`s.
            in_flight.set_served();
            Ok(Running {
                server: Server {
                    server: start(seconds),
                    ended: false,
                },
                supervisor,
                in_flight,
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
/// use background_tasks_actix::{BackgroundTasksMiddleware, ServeFuture, TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
/// let server = HttpServer::new({
///     let middleware = middleware.clone();
///     move || App::new().wrap(middleware.clone())
/// })
/// .workers(1)
/// .bind(("127.0.0.1", 0))?;
/// let serving: ServeFuture = serve(server, middleware).shutdown_signal(async {}).into_future();
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
///         ServeError::NotBound => 2, // a bug in main
///         _ => 1,
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
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
