//! The per-request state that the extractor and the response body share: the supervisor, and
//! the gate that after-response tasks wait behind until the response is gone.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use background_tasks::TaskSupervisor;
use tokio::sync::Notify;

use crate::shared::SharedSupervisor;

/// Set once the response has been sent or dropped.
const OPEN: u8 = 0b01;
/// Set once a task waits for the gate: only then does opening it take the notify's lock.
const WAITING: u8 = 0b10;

/// What one request under the layer shares with its after-response tasks: one allocation per
/// request, whether or not a handler uses it.
pub(crate) struct RequestState {
    pub(crate) supervisor: SharedSupervisor,
    gate: AtomicU8,
    opened: Notify,
}

impl RequestState {
    /// The state of a request whose response has not been sent yet.
    pub(crate) fn new(supervisor: impl Into<SharedSupervisor>) -> Arc<Self> {
        Arc::new(Self {
            supervisor: supervisor.into(),
            gate: AtomicU8::new(0),
            opened: Notify::new(),
        })
    }

    /// The state of no request at all: after-response tasks run at once.
    pub(crate) fn open(supervisor: TaskSupervisor) -> Arc<Self> {
        Arc::new(Self {
            supervisor: SharedSupervisor::new(supervisor),
            gate: AtomicU8::new(OPEN),
            opened: Notify::new(),
        })
    }

    /// Opens the gate and wakes the tasks waiting behind it.
    pub(crate) fn open_gate(&self) {
        // AcqRel pairs with the `fetch_or` in `wait_open`: whichever of the two comes second in
        // the variable's modification order sees the other's bit, so either the waiter sees
        // OPEN, or this sees WAITING and notifies a waiter that registered before it set it.
        let previous = self.gate.fetch_or(OPEN, Ordering::AcqRel);
        if previous & (WAITING | OPEN) == WAITING {
            self.opened.notify_waiters();
        }
    }

    /// Returns `true` once the response has been sent or dropped.
    pub(crate) fn is_open(&self) -> bool {
        // Acquire: pairs with the release part of `open_gate`; only a hint for `Debug`.
        self.gate.load(Ordering::Acquire) & OPEN != 0
    }

    /// Resolves once the gate is open.
    pub(crate) async fn wait_open(&self) {
        if self.is_open() {
            return;
        }
        let notified = self.opened.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before WAITING is published, so that an `open_gate` that sees WAITING
        // finds this waiter in the list.
        notified.as_mut().enable();
        // AcqRel: see `open_gate`.
        if self.gate.fetch_or(WAITING, Ordering::AcqRel) & OPEN != 0 {
            return;
        }
        notified.await;
    }
}

impl fmt::Debug for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestState")
            .field("supervisor", &self.supervisor)
            .field("response_done", &self.is_open())
            .finish()
    }
}

/// Opens the gate when dropped: lives in the response future, then in the response body.
#[derive(Debug)]
pub(crate) struct AfterResponseGuard {
    state: Arc<RequestState>,
}

impl AfterResponseGuard {
    pub(crate) fn new(state: Arc<RequestState>) -> Self {
        Self { state }
    }
}

impl Drop for AfterResponseGuard {
    fn drop(&mut self) {
        self.state.open_gate();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn an_open_gate_lets_waiters_through_at_once() {
        let state = RequestState::open(TaskSupervisor::new());
        state.wait_open().await;
        assert!(state.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_guard_wakes_every_waiter() {
        let state = RequestState::new(TaskSupervisor::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let state = state.clone();
                tokio::spawn(async move { state.wait_open().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(waiters.iter().all(|waiter| !waiter.is_finished()));
        drop(AfterResponseGuard::new(state.clone()));
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("the waiter is woken")
                .expect("the waiter does not panic");
        }
    }

    /// Races opening against waiting on many threads: a lost wake-up would hang a waiter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn opening_never_loses_a_concurrent_waiter() {
        let supervisor = TaskSupervisor::new();
        for _ in 0..2_000 {
            let state = RequestState::new(supervisor.clone());
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let state = state.clone();
                    tokio::spawn(async move { state.wait_open().await })
                })
                .collect();
            let opener = tokio::spawn(async move { drop(AfterResponseGuard::new(state)) });
            opener.await.expect("the opener does not panic");
            for waiter in waiters {
                tokio::time::timeout(Duration::from_secs(5), waiter)
                    .await
                    .expect("no waiter misses the opening")
                    .expect("the waiter does not panic");
            }
        }
    }
}
