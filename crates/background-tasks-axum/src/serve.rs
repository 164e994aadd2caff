//! Running an app with one shutdown budget: signal, drain delay, request drain, task shutdown.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use background_tasks::{ShutdownReport, TaskSupervisor};
use tokio::time::{Instant, Sleep, sleep};

use crate::connection::Connections;
use crate::make_service::MakeConnectionService;
use crate::readiness::Readiness;
use crate::signals::{BoxSignal, Event, Signals};

/// Serves `make_service` on `listener` like [`axum::serve()`], then shuts down within one
/// budget: the connections first, then the `supervisor`'s background tasks, whose
/// [`ShutdownReport`] it returns.
///
/// It serves what `axum::serve` serves ([`MakeConnectionService`] lists it): a [`Router`]
/// (after [`with_state`](Router::with_state) when it has state), a
/// [`MethodRouter`](axum::routing::MethodRouter), the `into_make_service` of a router, a
/// handler or any tower service, and
/// [`into_make_service_with_connect_info`](Router::into_make_service_with_connect_info), so
/// that [`ConnectInfo`](axum::extract::ConnectInfo) works.
///
/// Every request it serves carries the `supervisor` for the
/// [`BackgroundTasks`](crate::BackgroundTasks) extractor, and its
/// [`after_response`](crate::BackgroundTasks::after_response) tasks start once its body has
/// been sent, as under a [`BackgroundTasksLayer`](crate::BackgroundTasksLayer): an app that
/// `serve` runs needs no layer, and is cheaper without one (axum wraps each route under a
/// `Router::layer` in a boxed service that it clones for every request, and boxes the response
/// body the layer wraps). A layer applied anyway hands its own supervisor to the routes under
/// it.
///
/// It returns a [`Serve`] builder to configure the signals and the budgets, and that runs the
/// server when awaited. On the shutdown signal (by default SIGINT or SIGTERM, Ctrl-C on
/// Windows):
///
/// 1. the [`Readiness`] set with [`Serve::readiness`] answers `503` at once; the server keeps
///    accepting connections for [`drain_delay`](Serve::drain_delay), so that load balancers
///    notice before the listener closes; then it drops the listener and tells every connection
///    to finish the request in flight and close (an HTTP/2 connection gets a `GOAWAY`: all its
///    streams in flight finish, and the client opens no new one on it). Those requests may
///    still spawn tasks: the supervisor is still open;
/// 2. it waits up to [`request_drain_timeout`](Serve::request_drain_timeout) for the
///    connections to close, and closes those still open, dropping their requests (on an
///    HTTP/2 connection, every stream still open: its client sees the connection end);
/// 3. it shuts the supervisor down ([`TaskSupervisor::shutdown`]: drain, cancel, abort) and
///    returns its report, which the supervisor logs;
/// 4. a force signal at any point (by default a second SIGINT or SIGTERM) skips to the end:
///    connections are closed and [`TaskSupervisor::shutdown_now`] aborts the tasks at once.
///
/// A connection upgraded to another protocol (a WebSocket through `axum::extract::ws`) has left
/// hyper's hands, and its handler runs in a task of its own, but `serve` still counts its
/// socket until the handler drops it:
///
/// - it is left alone while requests drain, and does not hold back step 3: a socket loop run
///   as a supervised task (see [`TaskContext::shutdown_started`](background_tasks::TaskContext::shutdown_started))
///   learns of the shutdown while its socket is still open, and can send a Close frame; the
///   [`ShutdownReport`] counts its task, and names it if it had to be aborted;
/// - it gets what is left of `request_drain_timeout`; then `serve` logs how many upgraded
///   connections it closes, their reads return end of stream and their writes fail, so that
///   their handlers end, and `serve` waits for the handlers to drop them (100 ms at most:
///   a handler holding its socket without reading or writing it keeps it open, and `serve`
///   warns that it went on without it);
/// - the force signal closes it at once, as does dropping the `serve` future.
///
/// A handler of an upgraded connection still running in step 3 finds the supervisor shutting
/// down: its spawns fail with [`SpawnError::ShuttingDown`](background_tasks::SpawnError::ShuttingDown).
///
/// So the whole shutdown takes at most `drain_delay + request_drain_timeout +
/// shutdown_timeout + cancel_grace`, plus the few milliseconds the abort takes (and, when
/// connections had to be closed, the moment it takes them to drop their handlers: 100 ms at
/// most), whatever handlers and tasks do. Each step is logged at INFO level.
///
/// Blocking tasks that the report lists as abandoned still run on their threads, and dropping
/// a Tokio runtime waits for those threads, as `#[tokio::main]` does when `main` returns: to
/// exit without them, build the runtime yourself and end it with
/// [`Runtime::shutdown_background`](tokio::runtime::Runtime::shutdown_background), as the
/// quickstart example does. Meanwhile SIGINT and SIGTERM end the process: once no `serve`
/// listens for them (it returned, or its future was dropped), they have their default action
/// again, although tokio's handlers stay installed for the life of the process. An app that
/// listens for them itself after `serve` should set [`Serve::shutdown_signal`], so that
/// `serve` leaves SIGINT and SIGTERM alone.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, Readiness, serve};
///
/// async fn hello(tasks: BackgroundTasks) -> Result<&'static str, BackgroundTaskError> {
///     tasks.task("greet").spawn(async { /* ... */ })?;
///     Ok("hello")
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::builder()
///     .shutdown_timeout(Duration::from_secs(5))
///     .build();
/// let readiness = Readiness::new();
/// // No `BackgroundTasksLayer`: `serve` hands the supervisor to every request.
/// let app = Router::new()
///     .route("/", get(hello))
///     .route_service("/ready", readiness.clone());
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// # let _ = stop.send(());
/// let report = serve(listener, app, supervisor)
///     .readiness(readiness)
///     .drain_delay(Duration::from_secs(2))
///     .request_drain_timeout(Duration::from_secs(10))
/// #   .shutdown_signal(async move { let _ = stopped.await; })
///     .await?;
/// println!("shutdown report: {report}");
/// # Ok(())
/// # }
/// ```
pub fn serve<L, M>(listener: L, make_service: M, supervisor: TaskSupervisor) -> Serve<L, M>
where
    L: Listener,
    M: MakeConnectionService<L::Addr>,
{
    Serve {
        listener,
        make_service,
        supervisor,
        shutdown_signal: None,
        force_shutdown_signal: None,
        drain_delay: Duration::ZERO,
        request_drain_timeout: Serve::<L, M>::DEFAULT_REQUEST_DRAIN_TIMEOUT,
        readiness: None,
    }
}

/// The server that [`serve`] configures; awaiting it runs the server until it has shut down.
///
/// `M` is what it serves, a [`Router`] unless said otherwise.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use axum::Router;
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::serve;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let report = serve(listener, Router::new(), TaskSupervisor::new())
///     .shutdown_signal(async { /* e.g. a message from an admin endpoint */ })
///     .request_drain_timeout(Duration::from_secs(30))
///     .await?;
/// assert!(report.is_clean());
/// # Ok(())
/// # }
/// ```
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<L, M = Router> {
    listener: L,
    make_service: M,
    supervisor: TaskSupervisor,
    shutdown_signal: Option<BoxSignal>,
    force_shutdown_signal: Option<BoxSignal>,
    drain_delay: Duration,
    request_drain_timeout: Duration,
    readiness: Option<Readiness>,
}

impl<L, M> Serve<L, M> {
    /// The default of [`request_drain_timeout`](Self::request_drain_timeout): 10 seconds.
    pub const DEFAULT_REQUEST_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

    /// Starts the graceful shutdown when `signal` resolves, instead of on SIGINT or SIGTERM
    /// (Ctrl-C on Windows). Unless a [`force_shutdown_signal`](Self::force_shutdown_signal) is
    /// set too, nothing then forces the abort: the budgets alone bound the shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::Router;
    /// # use background_tasks::TaskSupervisor;
    /// # use background_tasks_axum::serve;
    /// # async fn run(listener: tokio::net::TcpListener) {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let server = serve(listener, Router::new(), TaskSupervisor::new())
    ///     .shutdown_signal(async move { let _ = stopped.await; });
    /// # }
    /// ```
    pub fn shutdown_signal<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.shutdown_signal = Some(Box::pin(signal));
        self
    }

    /// Skips what is left of the shutdown when `signal` resolves, at any point: connections are
    /// closed and background tasks aborted at once, and the server returns within
    /// milliseconds. Default: a second SIGINT or SIGTERM (Ctrl-C on Windows) when the shutdown
    /// signal is the default one, and nothing otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use axum::Router;
    /// # use background_tasks::TaskSupervisor;
    /// # use background_tasks_axum::serve;
    /// # async fn run(listener: tokio::net::TcpListener) {
    /// let server = serve(listener, Router::new(), TaskSupervisor::new())
    ///     .shutdown_signal(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .force_shutdown_signal(tokio::time::sleep(Duration::from_secs(60)));
    /// # }
    /// ```
    pub fn force_shutdown_signal<F>(mut self, signal: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.force_shutdown_signal = Some(Box::pin(signal));
        self
    }

    /// How long to keep accepting connections after the shutdown signal, while the
    /// [`readiness`](Self::readiness) answers `503`, so that a load balancer notices before
    /// the listener closes (lightship's `shutdownDelay`). Default: zero.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use axum::Router;
    /// # use background_tasks::TaskSupervisor;
    /// # use background_tasks_axum::serve;
    /// # async fn run(listener: tokio::net::TcpListener) {
    /// let server = serve(listener, Router::new(), TaskSupervisor::new())
    ///     .drain_delay(Duration::from_secs(5));
    /// # }
    /// ```
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.drain_delay = delay;
        self
    }

    /// How long requests in flight get to finish once the listener has closed; connections
    /// still open after it are closed. Default: 10 seconds.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use axum::Router;
    /// # use background_tasks::TaskSupervisor;
    /// # use background_tasks_axum::serve;
    /// # async fn run(listener: tokio::net::TcpListener) {
    /// let server = serve(listener, Router::new(), TaskSupervisor::new())
    ///     .request_drain_timeout(Duration::from_secs(30));
    /// # }
    /// ```
    pub fn request_drain_timeout(mut self, timeout: Duration) -> Self {
        self.request_drain_timeout = timeout;
        self
    }

    /// The readiness to flip to `503` the moment the shutdown signal arrives; mount a clone of
    /// it with [`Router::route_service`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use axum::Router;
    /// # use background_tasks::TaskSupervisor;
    /// # use background_tasks_axum::{Readiness, serve};
    /// # async fn run(listener: tokio::net::TcpListener) {
    /// let readiness = Readiness::new();
    /// let app = Router::new().route_service("/ready", readiness.clone());
    /// let server = serve(listener, app, TaskSupervisor::new()).readiness(readiness);
    /// # }
    /// ```
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = Some(readiness);
        self
    }
}

/// The signal handlers of a [`ServeFuture`]: installed by `into_future` when a runtime is
/// current, else at the first poll.
enum PreparedSignals {
    Installed(std::io::Result<Signals>),
    Later(Option<BoxSignal>, Option<BoxSignal>),
}

impl<L, M> Serve<L, M>
where
    L: Listener,
    M: MakeConnectionService<L::Addr>,
{
    async fn run(self, signals: PreparedSignals) -> Result<ShutdownReport, ServeError> {
        let Serve {
            mut listener,
            mut make_service,
            supervisor,
            shutdown_signal: _,
            force_shutdown_signal: _,
            drain_delay,
            request_drain_timeout,
            readiness,
        } = self;
        let mut signals = match signals {
            PreparedSignals::Installed(signals) => signals,
            PreparedSignals::Later(shutdown, force) => Signals::new(shutdown, force),
        }
        .map_err(ServeError::Signals)?;
        let connections = Connections::new(supervisor.clone());

        // Serving, until a signal.
        let event = loop {
            tokio::select! {
                biased;
                event = signals.next() => break event,
                (io, address) = listener.accept() => {
                    connections.spawn(io, make_service.make_service(address).await);
                }
            }
        };
        if let Some(readiness) = &readiness {
            readiness.set_not_ready();
        }
        let started = Instant::now();
        if event == Event::Force {
            return Ok(force(&connections, &supervisor).await);
        }

        // 1. The drain delay: still accepting, while readiness answers 503.
        tracing::info!(
            connections = connections.len(),
            "shutdown signal received: readiness answers 503; {}",
            if drain_delay.is_zero() {
                "no drain delay".to_owned()
            } else {
                format!("accepting connections for {drain_delay:?} more")
            }
        );
        let mut delay = pin!(sleep(drain_delay));
        loop {
            tokio::select! {
                biased;
                _ = signals.next() => return Ok(force(&connections, &supervisor).await),
                () = &mut delay => break,
                (io, address) = listener.accept() => {
                    connections.spawn(io, make_service.make_service(address).await);
                }
            }
        }
        drop(listener);
        connections.shutdown_gracefully();
        tracing::info!(
            connections = connections.len(),
            "stopped accepting connections; waiting up to {request_drain_timeout:?} for {} \
             open connections to finish their requests",
            connections.len(),
        );

        // 2. The request drain.
        let drain_started = Instant::now();
        // `sleep` rather than a deadline: a huge timeout must not overflow an `Instant`. One
        // timer for both steps: upgraded connections get what is left of it during step 3.
        let mut drain_timeout = pin!(sleep(request_drain_timeout));
        let drained = tokio::select! {
            biased;
            _ = signals.next() => return Ok(force(&connections, &supervisor).await),
            () = connections.wait_http() => true,
            () = &mut drain_timeout => false,
        };
        if !drained {
            tracing::warn!(
                connections = connections.len(),
                upgraded = connections.upgraded_len(),
                "closing {} connections and {} upgraded connections (WebSockets) still open \
                 after the request drain timeout of {request_drain_timeout:?}; shutting down \
                 background tasks",
                connections.len(),
                connections.upgraded_len(),
            );
            connections.close();
            wait_closed(&connections).await;
        } else if connections.upgraded_len() == 0 {
            tracing::info!(
                "all connections closed after {:?}; shutting down background tasks",
                drain_started.elapsed()
            );
        } else {
            tracing::info!(
                upgraded = connections.upgraded_len(),
                "all requests finished after {:?}; shutting down background tasks while {} \
                 upgraded connections (WebSockets) stay open until the request drain timeout, \
                 {:?} from now",
                drain_started.elapsed(),
                connections.upgraded_len(),
                request_drain_timeout.saturating_sub(drain_started.elapsed()),
            );
        }

        // 3. The supervisor's own phased shutdown, which logs its report, beside what is left
        // of the request drain for upgraded connections: a socket loop run as a task sees
        // `TaskContext::shutdown_started` while its socket is still open, and can say goodbye.
        let report = tokio::select! {
            biased;
            _ = signals.next() => {
                tracing::warn!(
                    upgraded = connections.upgraded_len(),
                    "force shutdown signal received: closing {} upgraded connections \
                     (WebSockets) and aborting background tasks now",
                    connections.upgraded_len(),
                );
                connections.close();
                // Once the supervisor's shutdown has ended, the same report.
                let report = supervisor.shutdown_now().await;
                wait_closed(&connections).await;
                report
            }
            (report, ()) = async {
                let upgraded = async {
                    // Once the timeout has run out, step 2 closed them already.
                    if drained {
                        drain_upgraded(&connections, drain_timeout).await;
                    }
                };
                tokio::join!(supervisor.shutdown(), upgraded)
            } => report,
        };
        tracing::info!("server shut down in {:?}", started.elapsed());
        Ok(report)
    }
}

/// Waits for the upgraded connections until the request drain timeout, then closes those
/// still open.
async fn drain_upgraded(connections: &Connections, drain_timeout: Pin<&mut Sleep>) {
    tokio::select! {
        () = connections.wait() => return,
        () = drain_timeout => {}
    }
    tracing::info!(
        upgraded = connections.upgraded_len(),
        "closing {} upgraded connections (WebSockets) still open at the request drain timeout",
        connections.upgraded_len(),
    );
    connections.close();
    wait_closed(connections).await;
}

/// Closes every connection and aborts every task, now.
async fn force(connections: &Connections, supervisor: &TaskSupervisor) -> ShutdownReport {
    tracing::warn!(
        connections = connections.len(),
        upgraded = connections.upgraded_len(),
        "force shutdown signal received: closing {} connections and {} upgraded connections \
         (WebSockets) and aborting background tasks now",
        connections.len(),
        connections.upgraded_len(),
    );
    connections.close();
    wait_closed(connections).await;
    supervisor.shutdown_now().await
}

/// How long to wait for closed connections to stop: each needs one more poll to drop its
/// handler, and an upgraded connection's handler one more read or write to see the close.
const CLOSE_WAIT: Duration = Duration::from_millis(100);

/// Waits, briefly, for closed connections to drop their handlers, so that none outlives
/// `serve` and their after-response tasks are scheduled before the supervisor shuts down.
async fn wait_closed(connections: &Connections) {
    if tokio::time::timeout(CLOSE_WAIT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            upgraded = connections.upgraded_len(),
            "{} closed connections and {} closed upgraded connections (WebSockets) had not \
             stopped after {CLOSE_WAIT:?}; going on without them (an upgraded connection's \
             handler that holds its socket without reading or writing it keeps it open)",
            connections.len(),
            connections.upgraded_len(),
        );
    }
}

impl<L, M> fmt::Debug for Serve<L, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &std::any::type_name::<L>())
            .field("make_service", &std::any::type_name::<M>())
            .field("supervisor", &self.supervisor)
            .field(
                "shutdown_signal",
                &self.shutdown_signal.as_ref().map(|_| ".."),
            )
            .field(
                "force_shutdown_signal",
                &self.force_shutdown_signal.as_ref().map(|_| ".."),
            )
            .field("drain_delay", &self.drain_delay)
            .field("request_drain_timeout", &self.request_drain_timeout)
            .field("readiness", &self.readiness)
            .finish()
    }
}

impl<L, M> IntoFuture for Serve<L, M>
where
    L: Listener,
    M: MakeConnectionService<L::Addr>,
{
    type Output = Result<ShutdownReport, ServeError>;
    type IntoFuture = ServeFuture;

    /// Installs the SIGINT and SIGTERM handlers at once when a runtime is current, so that a
    /// signal arriving before the first poll (say, right after the process announced its
    /// address) starts the graceful shutdown rather than killing the process.
    fn into_future(mut self) -> Self::IntoFuture {
        let (shutdown, force) = (
            self.shutdown_signal.take(),
            self.force_shutdown_signal.take(),
        );
        let signals = if tokio::runtime::Handle::try_current().is_ok() {
            PreparedSignals::Installed(Signals::new(shutdown, force))
        } else {
            PreparedSignals::Later(shutdown, force)
        };
        ServeFuture {
            inner: Box::pin(self.run(signals)),
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
/// use axum::Router;
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{ServeFuture, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server: ServeFuture = serve(listener, Router::new(), TaskSupervisor::new())
///     .shutdown_signal(async {})
///     .into_future();
/// let report = tokio::spawn(server).await??;
/// # Ok(())
/// # }
/// ```
///
/// # Cancel safety
///
/// Dropping it stops accepting and closes every connection, upgraded ones included, but does
/// not shut the supervisor down: call [`TaskSupervisor::shutdown`] for that.
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
/// use background_tasks_axum::ServeError;
///
/// fn explain(error: &ServeError) -> String {
///     match error {
///         ServeError::Signals(source) => format!("{error}: {source}"),
///         _ => error.to_string(),
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The handlers of the default shutdown signals (SIGINT and SIGTERM, or Ctrl-C on Windows)
    /// could not be installed.
    #[error(
        "could not install the SIGINT and SIGTERM handlers that start the graceful shutdown; \
         pass a future of your own to `Serve::shutdown_signal` instead"
    )]
    Signals(#[source] std::io::Error),
}
