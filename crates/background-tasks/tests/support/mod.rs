//! What several integration tests share.

use std::sync::{Arc, Mutex};

use background_tasks::{SupervisorBuilder, TaskFailure, TaskSupervisor};

/// The failures an `on_failure` callback was handed, in order.
pub(crate) type Failures = Arc<Mutex<Vec<TaskFailure>>>;

/// The supervisor `builder` builds, with an `on_failure` callback that records each failure.
pub(crate) fn recording(builder: SupervisorBuilder) -> (TaskSupervisor, Failures) {
    let failures = Failures::default();
    let supervisor = builder
        .on_failure({
            let failures = failures.clone();
            move |failure| {
                failures
                    .lock()
                    .expect("the failures' lock")
                    .push(failure.clone());
            }
        })
        .build();
    (supervisor, failures)
}
