//! Tasks dropped unfinished outside a shutdown: their runtime shut down (the end of `main`, a
//! panic in it, `axum::serve` instead of this project's `serve`) before the supervisor was shut
//! down. Each is logged at WARN, the first ten by name, then one summary line, and passed to
//! `on_failure`; a task aborted on purpose through its handle stays quiet.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use background_tasks::{FailureKind, TaskFailure, TaskSupervisor};
use support::recording;

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
    let (supervisor, failures) = recording(TaskSupervisor::builder());
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
    let (supervisor, failures) = recording(TaskSupervisor::builder());
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

#[test]
fn a_local_set_dropped_with_tasks_running_reports_each_as_dropped() {
    let logs = Logs::default();
    let _capture = logs.capture();
    let (supervisor, failures) = recording(TaskSupervisor::builder());
    let runtime = current_thread();
    let local_set = tokio::task::LocalSet::new();
    let shared = std::rc::Rc::new(()); // what makes these tasks need a `LocalSet`
    runtime.block_on(local_set.run_until(async {
        let held = shared.clone();
        supervisor
            .task("suspended")
            .spawn_local(async move {
                let _held = held;
                std::future::pending::<()>().await
            })
            .unwrap();
        supervisor
            .task("with-context")
            .spawn_local_with(|ctx| async move { ctx.cancelled().await })
            .unwrap();
        supervisor.spawn_local(async {}).unwrap().await.unwrap();
        let aborted = supervisor
            .task("aborted-on-purpose")
            .spawn_local(std::future::pending::<()>())
            .unwrap();
        tokio::task::yield_now().await;
        aborted.abort();
        assert!(aborted.await.unwrap_err().is_cancelled());
    }));
    // Queued on the `LocalSet`, never polled.
    supervisor
        .task("never-polled")
        .spawn_local_on(async {}, &local_set)
        .unwrap();
    assert_eq!(supervisor.len(), 3);
    // The runtime runs on: only the `LocalSet` goes, with the tasks it holds.
    runtime.block_on(async { drop(local_set) });
    assert_eq!(supervisor.len(), 0);
    assert_eq!(
        std::rc::Rc::strong_count(&shared),
        1,
        "the task's future was dropped"
    );

    let failures = failures.lock().unwrap();
    let mut names: Vec<_> = failures.iter().filter_map(TaskFailure::task_name).collect();
    names.sort_unstable();
    assert_eq!(names, ["never-polled", "suspended", "with-context"]);
    assert!(failures.iter().all(TaskFailure::is_dropped), "{failures:?}");
    assert!(
        !logs.text().contains("aborted-on-purpose"),
        "{}",
        logs.text()
    );
    drop(runtime);
}

#[test]
fn a_task_spawned_on_a_runtime_that_shuts_down_first_is_reported_dropped() {
    let (supervisor, failures) = recording(TaskSupervisor::builder());
    let main = current_thread();
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    main.block_on(async {
        supervisor
            .task("on-the-other-runtime")
            .spawn_on(std::future::pending::<()>(), other.handle())
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    });
    // The runtime that `main` runs goes on; the other one ends with the task it holds.
    other.shutdown_timeout(std::time::Duration::from_secs(5));
    assert_eq!(supervisor.len(), 0);
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].task_name(), Some("on-the-other-runtime"));
    assert!(failures[0].is_dropped());
    drop(main);
}
