//! Tasks dropped unfinished outside a shutdown: their runtime shut down (the end of `main`, a
//! panic in it, `axum::serve` instead of this project's `serve`) before the supervisor was shut
//! down. Each is logged at WARN, the first ten by name, then one summary line, and passed to
//! `on_failure`; a task aborted on purpose through its handle stays quiet.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use background_tasks::{FailureKind, TaskFailure, TaskSupervisor};

/// What the tracing subscriber of a test writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Installs a subscriber writing here, for this thread, until the guard drops.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || logs.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn recording() -> (TaskSupervisor, Arc<Mutex<Vec<TaskFailure>>>) {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let supervisor = TaskSupervisor::builder()
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

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn a_runtime_dropped_before_the_shutdown_logs_and_reports_every_running_task() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let (supervisor, failures) = recording();
    let runtime = current_thread();
    runtime.block_on(async {
        for n in 0..12 {
            supervisor
                .task(format!("mail-{n}"))
                .spawn(std::future::pending::<()>())
                .unwrap();
        }
        // These end before the runtime does: not lost.
        supervisor.spawn(async {}).unwrap().await.unwrap();
        let aborted = supervisor
            .task("aborted-on-purpose")
            .spawn(std::future::pending::<()>())
            .unwrap();
        tokio::task::yield_now().await;
        aborted.abort();
        assert!(aborted.await.unwrap_err().is_cancelled());
        // Not polled yet when the runtime goes: dropped before it started.
        supervisor.task("queued-late").spawn(async {}).unwrap();
    });
    // As when `main` returns without a shutdown: the runtime drops the tasks it holds.
    drop(runtime);
    drop(supervisor);

    let failures = failures.lock().unwrap();
    let mut names: Vec<_> = failures.iter().filter_map(TaskFailure::task_name).collect();
    names.sort_unstable();
    let mut expected: Vec<String> = (0..12).map(|n| format!("mail-{n}")).collect();
    expected.push("queued-late".to_owned());
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "every task dropped unfinished, and only those"
    );
    assert!(
        failures
            .iter()
            .all(|failure| failure.kind() == FailureKind::Dropped && failure.is_dropped()),
        "{failures:?}"
    );
    let pending = failures
        .iter()
        .find(|failure| failure.task_name() == Some("mail-0"))
        .unwrap();
    assert!(
        pending
            .to_string()
            .contains("was dropped unfinished after running"),
        "{pending}"
    );

    let logs = logs.text();
    let named: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("was dropped unfinished"))
        .collect();
    assert_eq!(named.len(), 10, "the first ten by name:\n{logs}");
    assert!(
        named.iter().all(|line| line.contains("task.id=")),
        "each with its id:\n{logs}"
    );
    let summary: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("13 background tasks were dropped unfinished"))
        .collect();
    assert_eq!(summary.len(), 1, "then one summary line:\n{logs}");
    assert!(summary[0].contains("WARN"), "{logs}");
    assert!(!logs.contains("aborted-on-purpose"), "{logs}");
}

#[test]
fn a_runtime_dropped_after_the_shutdown_loses_nothing_more() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let (supervisor, failures) = recording();
    let runtime = current_thread();
    let report = runtime.block_on(async {
        supervisor
            .task("stuck")
            .spawn(std::future::pending::<()>())
            .unwrap();
        supervisor.shutdown_now().await
    });
    drop(runtime);
    drop(supervisor);
    assert_eq!(report.aborted(), 1);
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].kind(), FailureKind::Aborted);
    assert!(
        !logs.text().contains("dropped unfinished"),
        "{}",
        logs.text()
    );
}
