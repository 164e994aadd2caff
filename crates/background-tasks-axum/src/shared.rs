//! The supervisor as the requests of one connection share it.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use background_tasks::TaskSupervisor;

/// A [`TaskSupervisor`] whose clones share a reference count of their own.
///
/// Every request clones the supervisor twice (hyper-util clones the connection's service for
/// each request, and the request's state keeps one) and drops both clones when it is done.
/// The supervisor's own count is written by every task of every worker as it spawns and ends:
/// two workers serving requests would take that cache line from each other four more times a
/// request. `serve` makes one of these per connection, whose count only the worker running the
/// connection writes. A [`BackgroundTasksLayer`](crate::BackgroundTasksLayer) makes one that
/// all its services share: axum clones a route's service for every request, as it did the
/// supervisor before.
#[derive(Clone)]
pub(crate) struct SharedSupervisor(Arc<TaskSupervisor>);

impl SharedSupervisor {
    pub(crate) fn new(supervisor: TaskSupervisor) -> Self {
        Self(Arc::new(supervisor))
    }
}

impl From<TaskSupervisor> for SharedSupervisor {
    fn from(supervisor: TaskSupervisor) -> Self {
        Self::new(supervisor)
    }
}

impl Deref for SharedSupervisor {
    type Target = TaskSupervisor;

    #[inline]
    fn deref(&self) -> &TaskSupervisor {
        &self.0
    }
}

impl fmt::Debug for SharedSupervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}
