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

/// One per worker's service: the app-data container of its last request and that request's
/// gate, which the next request reuses once nothing holds them any more.
///
/// A value in a request's extensions is boxed when inserted and dropped when the request
/// ends: an allocation and a free per request, plus a hash insert. A request-scoped app-data
/// container (`ServiceRequest::add_data_container`) is an `Rc` that the request holds until it
/// ends, so the same one serves the next request, which a worker mostly starts only once the
/// last one has ended: each request then costs an `Rc` clone, and the extractor finds the
/// value with the same lookup.
///
/// A request holds its container for as long as it, or a clone of it, lives, and its guard
/// holds the gate until the response has been sent: both are reused only when nothing else
/// holds them, so an extractor taken from a clone of the request, even after the handler, has
/// that request's gate, as with extensions.
pub(crate) struct RequestData {
    /// Cloned into a new gate only: the gates, which requests clone, are this worker's own.
    supervisor: TaskSupervisor,
    /// This worker's count of the requests in flight, which the gates' guards count in.
    in_flight: Arc<InFlightShard>,
    last: Cell<Option<Last>>,
}

/// A request's app data, and the worker's own copy of its gate, which the request's guard
/// holds: the worker reaches the gate without looking it up in the container, and a guard
/// costs no atomic reference count.
struct Last {
    /// Holds the request's [`RequestTasks`], whose gate is the same as `gate`.
    data: Rc<Extensions>,
    gate: Rc<Gate>,
}

impl Last {
    /// The copies of a gate that a free `Last` holds: its own, and its container's.
    const GATE_HOLDERS: usize = 2;

    /// Closes the gate again for a new request, if nothing else holds the container or the
    /// gate (a request or a clone of one, a guard, an extractor, a task): `false` otherwise.
    #[inline]
    fn close_again(&self) -> bool {
        Rc::strong_count(&self.data) == 1
            && Rc::strong_count(&self.gate) == 1
            && self.gate.close_again(Self::GATE_HOLDERS)
    }
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
        let last = match self.last.take() {
            Some(last) if last.close_again() => last,
            // Its request, a clone of it, or a task still holds it.
            _ => self.new_last(),
        };
        let answer = (Rc::clone(&last.data), last.gate.guard());
        self.last.set(Some(last));
        answer
    }

    #[cold]
    fn new_last(&self) -> Last {
        let sent = Gate::new(self.supervisor.clone(), Some(Arc::clone(&self.in_flight)));
        let mut data = Extensions::new();
        data.insert(RequestTasks { sent: sent.clone() });
        Last {
            data: Rc::new(data),
            gate: Rc::new(sent),
        }
    }
}

impl fmt::Debug for RequestData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestData")
            .field("supervisor", &self.supervisor)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_flight::InFlight;

    fn data() -> (RequestData, Arc<InFlight>) {
        let in_flight = Arc::new(InFlight::default());
        let shard = in_flight.shard();
        (RequestData::new(TaskSupervisor::new(), shard), in_flight)
    }

    /// The request's gate, as its extractor holds it.
    fn gate(data: &Extensions) -> Gate {
        data.get::<RequestTasks>()
            .expect("the request's tasks")
            .sent
            .clone()
    }

    fn is_sent(data: &Extensions) -> bool {
        gate(data).is_open()
    }

    #[test]
    fn a_request_reuses_the_last_ones_data_once_nothing_holds_it() {
        let (requests, in_flight) = data();
        let (first, guard) = requests.next();
        assert_eq!(in_flight.len(), 1);
        drop((first.clone(), guard));
        assert_eq!(in_flight.len(), 0);
        let pointer = Rc::as_ptr(&first);
        drop(first);
        let (second, guard) = requests.next();
        assert_eq!(Rc::as_ptr(&second), pointer, "reused");
        assert!(!is_sent(&second), "its gate closed again");
        drop(guard);
        assert!(is_sent(&second), "and opened by its guard");
    }

    #[test]
    fn a_request_gets_new_data_while_the_last_ones_is_held() {
        let (requests, in_flight) = data();
        // The last request itself (or a clone of it) still lives.
        let (first, first_guard) = requests.next();
        let (second, second_guard) = requests.next();
        assert!(!Rc::ptr_eq(&first, &second));
        assert_eq!(in_flight.len(), 2);
        // Its guard (its response body) still lives.
        drop(second);
        let (third, third_guard) = requests.next();
        assert!(!is_sent(&third));
        drop(second_guard);
        assert!(
            !is_sent(&third),
            "the guard of another request opens its own gate"
        );
        // An extractor (or a task) still holds its gate after the response was sent.
        let extracted = gate(&third);
        drop((third, third_guard));
        let (fourth, fourth_guard) = requests.next();
        assert!(extracted.is_open(), "its gate stays open");
        assert!(!is_sent(&fourth));
        drop((first, first_guard, fourth, fourth_guard));
        assert_eq!(in_flight.len(), 0);
    }
}
