//! Tasks that need not be `Send`, on a `LocalSet`: `spawn_local`, `spawn_local_on` and their
//! forms. They get what every task gets (admission, the drain, the cancellation signal, the
//! abort, panics reported, exact counts) for as long as their `LocalSet` runs. A `LocalSet`
//! dropped with tasks still running is covered in `dropped.rs`.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use background_tasks::{FailureKind, SpawnError, TaskSupervisor};
use support::recording;
use tokio::task::LocalSet;
use tokio::time::sleep;

#[tokio::test(start_paused = true)]
async fn a_not_send_task_on_a_local_set_is_drained_at_shutdown() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .build();
    let written = Rc::new(RefCell::new(Vec::new()));
    LocalSet::new()
        .run_until(async {
            let log = written.clone();
            supervisor
                .task("flush-buffer")
                .spawn_local(async move {
                    sleep(Duration::from_secs(2)).await;
                    log.borrow_mut().push("flushed");
                })
                .unwrap();
            let log = written.clone();
            supervisor
                .spawn_local_with(|ctx| async move {
                    ctx.shutdown_started().await;
                    log.borrow_mut().push("saw the shutdown");
                })
                .unwrap();
            let report = supervisor.shutdown().await;
            assert_eq!(report.completed(), 2, "{report}");
            assert!(report.is_clean(), "{report}");
        })
        .await;
    let mut written = written.borrow().clone();
    written.sort_unstable();
    assert_eq!(written, ["flushed", "saw the shutdown"]);
}

#[tokio::test(start_paused = true)]
async fn local_tasks_that_outlive_the_drain_are_cancelled_then_aborted_and_named() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let local_set = LocalSet::new();
    let stopped_early = Rc::new(Cell::new(false));
    let flag = stopped_early.clone();
    supervisor
        .task("listens")
        .spawn_local_with_on(
            |ctx| async move {
                ctx.cancelled().await;
                flag.set(true);
            },
            &local_set,
        )
        .unwrap();
    supervisor
        .task("ignores-everything")
        .spawn_local_on(std::future::pending::<()>(), &local_set)
        .unwrap();
    supervisor
        .task("ignores-the-signal")
        .spawn_local_with_on(
            |_ctx| async { sleep(Duration::from_secs(60)).await },
            &local_set,
        )
        .unwrap();
    let report = local_set.run_until(supervisor.shutdown()).await;
    assert!(stopped_early.get());
    assert_eq!(
        (report.completed(), report.cancelled(), report.aborted()),
        (0, 1, 2),
        "{report}"
    );
    let mut aborted: Vec<_> = report
        .aborted_tasks()
        .iter()
        .filter_map(|task| task.name())
        .collect();
    aborted.sort_unstable();
    assert_eq!(aborted, ["ignores-everything", "ignores-the-signal"]);
    // Woken by the abort, they stop the next time their `LocalSet` runs.
    local_set.run_until(tokio::task::yield_now()).await;
    assert!(supervisor.is_empty());
}

#[tokio::test(start_paused = true)]
async fn local_spawns_are_admitted_and_refused_as_any_spawn() {
    let supervisor = TaskSupervisor::builder().max_tasks(2).build();
    let local_set = LocalSet::new();
    local_set
        .run_until(async {
            let other = LocalSet::new();
            supervisor
                .spawn_local(std::future::pending::<()>())
                .unwrap();
            supervisor
                .spawn_local_on(std::future::pending::<()>(), &other)
                .unwrap();
            assert!(matches!(
                supervisor.spawn_local(async {}),
                Err(SpawnError::AtCapacity { limit: 2 })
            ));
        })
        .await;
    let supervisor = TaskSupervisor::new();
    local_set
        .run_until(async {
            supervisor
                .spawn_local_with(|ctx| async move {
                    // Follow-ups through the context are accepted during the drain.
                    ctx.shutdown_started().await;
                    ctx.spawn_local(async {}).unwrap().await.unwrap();
                })
                .unwrap();
            let (report, refused) = tokio::join!(supervisor.shutdown(), async {
                supervisor.spawn_local(async {})
            });
            assert!(matches!(refused, Err(SpawnError::ShuttingDown)));
            assert_eq!(report.completed(), 2, "{report}");
        })
        .await;
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_local_task_is_reported_and_reaches_its_handle() {
    let (supervisor, failures) = recording(TaskSupervisor::builder());
    let error = LocalSet::new()
        .run_until(async {
            let not_send = Rc::new("local");
            supervisor
                .task("panics")
                .spawn_local(async move { panic!("{} boom", not_send) })
                .unwrap()
                .await
                .unwrap_err()
        })
        .await;
    assert!(error.is_panic());
    let failures = failures.lock().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].kind(), FailureKind::Panic);
    assert_eq!(failures[0].task_name(), Some("panics"));
    assert_eq!(failures[0].panic_message(), Some("local boom"));
}

#[tokio::test]
async fn spawn_local_outside_a_local_set_panics_and_leaves_nothing_counted() {
    let (supervisor, failures) = recording(TaskSupervisor::builder());
    let spawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        supervisor.task("nowhere-to-run").spawn_local(async {})
    }));
    let panic = spawn.expect_err("tokio's spawn_local panics outside of a LocalSet");
    let message = panic
        .downcast_ref::<&str>()
        .map(|message| (*message).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(message.contains("LocalSet"), "{message}");
    assert_eq!(supervisor.len(), 0, "its place was given back");
    assert!(failures.lock().unwrap().is_empty(), "the panic says it all");
    let snapshot = supervisor.snapshot();
    assert_eq!(snapshot.counters.spawned, 0, "never spawned");
    assert!(supervisor.shutdown().await.is_clean());
}
