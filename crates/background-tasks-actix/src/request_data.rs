//! Where the extractor finds its request's [`BackgroundTasks`]: request-scoped app data that
//! each worker's service reuses from one request to the next.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::dev::Extensions;
use background_tasks::TaskSupervisor;

use crate::extract::BackgroundTasks;
use crate::gate::{Gate, GateGuard};
use crate::in_flight::InFlightShard;

/// What the middleware makes extractable in a request: a type of this crate's own, so that no
/// app data of the user's can take its place.
pub(crate) struct RequestTasks {
    /// Opened by the request's [`GateGuard`], in its response body.
    sent: Gate,
}

impl RequestTasks {
    /// The extractor's value.
    #[inline]
    pub(crate) fn tasks(&self) -> BackgroundTasks {
        BackgroundTasks::for_request(self.sent.clone())
    }
}

/// One per worker's service: the app-data container of its last request, which the next
/// request reuses once no request holds it any more.
///
/// A value in a request's extensions is boxed when inserted and dropped when the request
/// ends: an allocation and a free per request, plus a hash insert. A request-scoped app-data
/// container (`ServiceRequest::add_data_container`) is an `Rc` that the request holds until it
/// ends, so the same one serves the next request, which a worker mostly starts only once the
/// last one has ended: each request then costs an `Rc` clone, and the extractor finds the
/// value with the same lookup.
///
/// A request holds its container for as long as it, or a clone of it, lives: the container
/// is changed only when nothing else holds it (`Rc::get_mut`), so an extractor taken from a
/// clone of the request, even after the handler, has that request's gate, as with extensions.
pub(crate) struct RequestData {
    /// Cloned into a new gate only: the gates, which requests clone, are this worker's own.
    supervisor: TaskSupervisor,
    /// This worker's count of the requests in flight, which the gates' guards count in.
    in_flight: Arc<InFlightShard>,
    last: Cell<Option<Rc<Extensions>>>,
}

impl RequestData {
    pub(crate) fn new(supervisor: TaskSupervisor, in_flight: Arc<InFlightShard>) -> Self {
        Self {
            supervisor,
            in_flight,
            last: Cell::new(None),
        }
    }

    pub(crate) fn supervisor(&self) -> &TaskSupervisor {
        &self.supervisor
    }

    /// The app data of a new request, with a closed gate for its after-response tasks, and
    /// the guard that opens that gate and counts the request in flight until then.
    #[inline]
    pub(crate) fn next(&self) -> (Rc<Extensions>, GateGuard) {
        let (data, guard) = match self.last.take() {
            Some(mut data) => {
                match Rc::get_mut(&mut data).and_then(|data| data.get_mut::<RequestTasks>()) {
                    Some(tasks) => {
                        tasks.sent.close_again();
                        let guard = tasks.sent.guard();
                        (data, guard)
                    }
                    // Its request, or a clone of it, still lives.
                    None => self.new_data(),
                }
            }
            None => self.new_data(),
        };
        self.last.set(Some(Rc::clone(&data)));
        (data, guard)
    }

    #[cold]
    fn new_data(&self) -> (Rc<Extensions>, GateGuard) {
        let sent = Gate::new(self.supervisor.clone(), Some(Arc::clone(&self.in_flight)));
        let guard = sent.guard();
        let mut data = Extensions::new();
        data.insert(RequestTasks { sent });
        (Rc::new(data), guard)
    }
}

impl fmt::Debug for RequestData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestData")
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}
