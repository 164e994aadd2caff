//! The signals that start the graceful shutdown and force the abort.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A shutdown or force signal set by the user.
pub(crate) type BoxSignal = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a signal asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Begin the graceful shutdown.
    Shutdown,
    /// Skip what is left of the budgets and abort now.
    Force,
}

/// Where one of the two signals comes from.
enum Source {
    /// The `count`-th SIGINT or SIGTERM (Ctrl-C on Windows).
    Os {
        count: usize,
    },
    Custom(BoxSignal),
    /// Fired already, or never set.
    Inert,
}

/// The shutdown and force signals of one `serve`.
pub(crate) struct Signals {
    shutdown: Source,
    force: Source,
    os: Option<OsSignals>,
    /// How many OS signals arrived so far.
    received: usize,
}

impl Signals {
    /// The default shutdown signal is the first SIGINT or SIGTERM, and the default force
    /// signal the second one, unless a custom shutdown signal replaces the first.
    pub(crate) fn new(shutdown: Option<BoxSignal>, force: Option<BoxSignal>) -> io::Result<Self> {
        let default_shutdown = shutdown.is_none();
        let shutdown = shutdown.map_or(Source::Os { count: 1 }, Source::Custom);
        let force = match force {
            Some(force) => Source::Custom(force),
            None if default_shutdown => Source::Os { count: 2 },
            None => Source::Inert,
        };
        // Installed now rather than at the first signal, so that a failure shows before any
        // request is served.
        let os = (matches!(shutdown, Source::Os { .. }) || matches!(force, Source::Os { .. }))
            .then(OsSignals::install)
            .transpose()?;
        Ok(Self {
            shutdown,
            force,
            os,
            received: 0,
        })
    }

    /// Resolves with the next event: `Shutdown` once, then only `Force`. Cancel safe.
    pub(crate) async fn next(&mut self) -> Event {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(os) = &mut self.os {
            self.received += os.poll_received(cx);
        }
        if poll_source(&mut self.force, self.received, cx) {
            return Poll::Ready(Event::Force);
        }
        if poll_source(&mut self.shutdown, self.received, cx) {
            return Poll::Ready(Event::Shutdown);
        }
        Poll::Pending
    }
}

/// Returns `true` the one time `source` fires.
fn poll_source(source: &mut Source, received: usize, cx: &mut Context<'_>) -> bool {
    let fired = match source {
        Source::Os { count } => received >= *count,
        Source::Custom(signal) => signal.as_mut().poll(cx).is_ready(),
        Source::Inert => false,
    };
    if fired {
        *source = Source::Inert;
    }
    fired
}

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signals")
            .field("os", &self.os.is_some())
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

#[cfg(unix)]
struct OsSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    _listening: default_action::Listening,
}

#[cfg(unix)]
impl OsSignals {
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        // First, so that a signal is never left with neither `serve` nor its default action.
        let listening = default_action::Listening::start()?;
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            _listening: listening,
        })
    }

    /// How many signals arrived since the last call; registers for the next one.
    fn poll_received(&mut self, cx: &mut Context<'_>) -> usize {
        let mut received = 0;
        while let Poll::Ready(Some(())) = self.interrupt.poll_recv(cx) {
            received += 1;
        }
        while let Poll::Ready(Some(())) = self.terminate.poll_recv(cx) {
            received += 1;
        }
        received
    }
}

/// SIGINT and SIGTERM end the process again once no `serve` listens for them.
///
/// tokio's handlers, once installed, stay for the life of the process, and only queue the
/// signal for a listener that is gone: after `serve` returned, Ctrl-C did nothing, even while
/// the runtime's drop waited for an abandoned blocking thread. So a second handler, beside
/// tokio's, does what the signal would do without any handler (end the process), while no
/// `serve` listens.
#[cfg(unix)]
mod default_action {
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, PoisonError};

    use signal_hook::consts::{SIGINT, SIGTERM};

    /// How many `serve`s listen, and the flag the signal handlers read.
    struct Listeners {
        count: usize,
        /// `None` until the first `serve` installs the handlers, once per process.
        idle: Option<Arc<AtomicBool>>,
    }

    // A mutex, so that the count and the flag change together: a `serve` that starts while
    // another one ends cannot leave the flag saying that nobody listens.
    static LISTENERS: Mutex<Listeners> = Mutex::new(Listeners {
        count: 0,
        idle: None,
    });

    /// One `serve` listening for SIGINT and SIGTERM, until dropped.
    pub(super) struct Listening(());

    impl Listening {
        pub(super) fn start() -> io::Result<Self> {
            // The count stays right even if a holder panicked: it is changed in one statement.
            let mut listeners = LISTENERS.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = match &listeners.idle {
                Some(idle) => idle.clone(),
                None => {
                    let idle = Arc::new(AtomicBool::new(false));
                    for signal in [SIGINT, SIGTERM] {
                        signal_hook::flag::register_conditional_default(signal, idle.clone())?;
                    }
                    listeners.idle.insert(idle).clone()
                }
            };
            listeners.count += 1;
            // SeqCst, as the handler's load: the handler runs on whichever thread the signal
            // interrupts, with no lock to order it.
            idle.store(false, Ordering::SeqCst);
            Ok(Self(()))
        }
    }

    impl Drop for Listening {
        fn drop(&mut self) {
            let mut listeners = LISTENERS.lock().unwrap_or_else(PoisonError::into_inner);
            listeners.count -= 1;
            if listeners.count == 0
                && let Some(idle) = &listeners.idle
            {
                idle.store(true, Ordering::SeqCst);
            }
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

    /// How many signals arrived since the last call; registers for the next one.
    fn poll_received(&mut self, cx: &mut Context<'_>) -> usize {
        let mut received = 0;
        while let Poll::Ready(Some(())) = self.ctrl_c.poll_recv(cx) {
            received += 1;
        }
        received
    }
}
