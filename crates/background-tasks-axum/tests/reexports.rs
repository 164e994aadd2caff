//! An axum app needs this crate only: the core's types are reachable through it, as axum
//! re-exports axum-core's. This file names no other crate of the project.

use std::time::Duration;

use background_tasks_axum::{
    ShutdownReport, SpawnError, SupervisorBuilder, TaskBuilder, TaskContext, TaskError,
    TaskFailure, TaskHandle, TaskId, TaskRecord, TaskSupervisor, TrackedFuture,
};

#[tokio::test(start_paused = true)]
async fn the_core_types_an_app_needs_are_reexported() {
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TaskFailure>::new()));
    let builder: SupervisorBuilder = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(1))
        .on_failure({
            let failures = failures.clone();
            move |failure| failures.lock().unwrap().push(failure.clone())
        });
    let supervisor = builder.build();

    let named: TaskBuilder<'_> = supervisor.task("stuck");
    let stuck: TaskHandle<()> = named.spawn(std::future::pending()).unwrap();
    let id: TaskId = stuck.id();
    let cooperative = supervisor
        .spawn_with(|ctx: TaskContext| async move { ctx.cancelled().await })
        .unwrap();
    let tracked: TrackedFuture<_> = supervisor.track_future(async { 1 }).unwrap();
    assert_eq!(tracked.await, 1);

    let report: ShutdownReport = supervisor.shutdown().await;
    let aborted: &[TaskRecord] = report.aborted_tasks();
    assert_eq!(aborted[0].id(), id);
    assert_eq!(report.cancelled(), 1);
    let error: TaskError = stuck.await.unwrap_err();
    assert!(error.is_cancelled());
    cooperative.await.unwrap();
    assert!(failures.lock().unwrap()[0].is_aborted());
    assert!(matches!(
        supervisor.spawn(async {}),
        Err(SpawnError::ShuttingDown)
    ));
}
