//! The signals that start the graceful shutdown and force the abort.

use std::future::{Future, pending};
use std::io;
use std::pin::Pin;

/// A shutdown or force signal set by the user.
pub(crate) type BoxSignal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What the first signal asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Shutdown,
    Force,
}

/// Where a signal comes from.
enum Source {
    /// The next SIGINT or SIGTERM (Ctrl-C on Windows).
    Os,
    Custom(BoxSignal),
    /// Fired already, or never set.
    Never,
}

/// The shutdown and force signals of one `serve`: by default the first and the second
/// SIGINT or SIGTERM.
pub(crate) struct Signals {
    shutdown: Source,
    force: Source,
    os: Option<OsSignals>,
}

impl Signals {
    pub(crate) fn new(shutdown: Option<BoxSignal>, force: Option<BoxSignal>) -> io::Result<Self> {
        let (shutdown, force) = match (shutdown, force) {
            (None, force) => (Source::Os, force.map_or(Source::Os, Source::Custom)),
            (Some(shutdown), force) => (
                Source::Custom(shutdown),
                force.map_or(Source::Never, Source::Custom),
            ),
        };
        // Installed now, so that a failure shows before the server starts, and a signal that
        // arrives before the first poll is not lost.
        let os = matches!(shutdown, Source::Os) || matches!(force, Source::Os);
        let os = os.then(OsSignals::install).transpose()?;
        Ok(Self {
            shutdown,
            force,
            os,
        })
    }

    /// Resolves with the shutdown signal, or with a custom force signal that comes first.
    /// Cancel safe.
    pub(crate) async fn first(&mut self) -> Event {
        let Self {
            shutdown,
            force,
            os,
        } = self;
        // The OS force signal is the one after the shutdown signal: only a custom one counts
        // before it.
        let custom_force = async {
            match force {
                Source::Custom(_) => force.wait(&mut None).await,
                _ => pending().await,
            }
        };
        tokio::select! {
            biased;
            () = custom_force => Event::Force,
            () = shutdown.wait(os) => Event::Shutdown,
        }
    }

    /// Resolves with the force signal. Cancel safe.
    pub(crate) async fn force(&mut self) {
        self.force.wait(&mut self.os).await;
    }
}

impl Source {
    async fn wait(&mut self, os: &mut Option<OsSignals>) {
        match (&mut *self, os) {
            (Source::Os, Some(os)) => os.recv().await,
            (Source::Custom(signal), _) => {
                signal.as_mut().await;
                // A future must not be polled again once it has completed.
                *self = Source::Never;
            }
            _ => pending().await,
        }
    }
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("os", &self.os.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
struct OsSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl OsSignals {
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next SIGINT or SIGTERM. Cancel safe.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(windows)]
struct OsSignals {
    ctrl_c: tokio::signal::windows::CtrlC,
}

#[cfg(windows)]
impl OsSignals {
    fn install() -> io::Result<Self> {
        Ok(Self {
            ctrl_c: tokio::signal::windows::ctrl_c()?,
        })
    }

    /// The next Ctrl-C. Cancel safe.
    async fn recv(&mut self) {
        let _ = self.ctrl_c.recv().await;
    }
}
