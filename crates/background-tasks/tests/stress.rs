//! Spawns, ends and a shutdown racing on many threads: no task may escape the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use background_tasks::{SpawnError, TaskSupervisor};

/// Counts, when a task's future is dropped (however it ends), whether shutdown had begun.
struct Witness {
    supervisor: TaskSupervisor,
    after: Arc<AtomicUsize>,
    before: Arc<AtomicUsize>,
}

impl Drop for Witness {
    fn drop(&mut self) {
        // A task that sees shutdown under way when it ends ends after the phase changed, so
        // the report must count it; one that does not may still be counted, as the phase can
        // change between this check and the end being counted.
        let counter = if self.supervisor.is_shutting_down() {
            &self.after
        } else {
            &self.before
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn no_task_escapes_the_report_when_spawns_race_with_shutdown() {
    for round in 0..20 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let supervisor = TaskSupervisor::builder()
            .shutdown_timeout(Duration::from_millis(20))
            .cancel_grace(Duration::from_millis(20))
            .build();
        let after = Arc::new(AtomicUsize::new(0));
        let before = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let spawners: Vec<_> = (0..4)
            .map(|thread| {
                let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
                let (after, before) = (after.clone(), before.clone());
                let (admitted, refused) = (admitted.clone(), refused.clone());
                std::thread::spawn(move || {
                    let _runtime = handle.enter();
                    for i in 0.. {
                        let witness = Witness {
                            supervisor: supervisor.clone(),
                            after: after.clone(),
                            before: before.clone(),
                        };
                        let spawned = match (i + thread) % 5 {
                            0 => supervisor.spawn(async move { drop(witness) }).map(drop),
                            1 => supervisor
                                .spawn(async move {
                                    let _witness = witness;
                                    tokio::task::yield_now().await;
                                })
                                .map(drop),
                            2 => supervisor
                                .spawn_with(|ctx| async move {
                                    let _witness = witness;
                                    ctx.cancelled().await;
                                })
                                .map(drop),
                            3 => supervisor
                                .spawn_with(|ctx| async move {
                                    let _witness = witness;
                                    ctx.shutdown_started().await;
                                    // Follow-ups may still be refused once cancelling; a
                                    // refused one must leave no trace in the report.
                                    let _ = ctx.spawn(tokio::task::yield_now());
                                    let _ = ctx.spawn_blocking(|| ());
                                    std::future::pending::<()>().await;
                                })
                                .map(drop),
                            _ => supervisor
                                .spawn_blocking(move || {
                                    let _witness = witness;
                                    std::thread::sleep(Duration::from_micros(200));
                                })
                                .map(drop),
                        };
                        match spawned {
                            Ok(()) => {
                                admitted.fetch_add(1, Ordering::SeqCst);
                            }
                            // The refused task's witness was dropped, unrun, by the spawn.
                            Err(SpawnError::ShuttingDown) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Err(other) => panic!("unexpected {other}"),
                        }
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + round % 7));
        let report = runtime.block_on(supervisor.shutdown());
        for spawner in spawners {
            spawner.join().unwrap();
        }
        runtime.block_on(supervisor.wait_idle());
        drop(runtime);

        // Follow-ups spawned by tasks are neither admitted above nor witnessed.
        let reported =
            report.completed() + report.cancelled() + report.aborted() + report.abandoned();
        let (after, before) = (after.load(Ordering::SeqCst), before.load(Ordering::SeqCst));
        let admitted = admitted.load(Ordering::SeqCst);
        let refused = refused.load(Ordering::SeqCst);
        assert_eq!(
            after + before,
            admitted + refused,
            "round {round}: every task ended once"
        );
        // Refused spawns drop their witness while shutting down, but were never tasks.
        let ended_after = after - refused;
        assert!(
            reported >= ended_after,
            "round {round}: {ended_after} tasks ended after shutdown began, the report has {reported}: {report}"
        );
        assert_eq!(
            report.abandoned(),
            report.abandoned_tasks().len(),
            "round {round}: no task is abandoned unnamed, as none blocks in its first poll: {report}"
        );
        assert!(supervisor.is_empty());
    }
}

#[test]
fn follow_ups_refused_after_the_abort_walk_leave_no_phantom_in_the_report() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..100 {
        let supervisor = TaskSupervisor::new();
        let report = runtime.block_on(async {
            for _ in 0..4 {
                supervisor
                    .spawn_with(|ctx| async move {
                        ctx.shutdown_started().await;
                        // Admitted during the drain, some reach their shard lock only after
                        // the abort walk, and are refused there.
                        for _ in 0..200 {
                            if ctx.spawn_blocking(|| ()).is_err() || ctx.is_cancelled() {
                                break;
                            }
                        }
                        std::future::pending::<()>().await;
                    })
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::time::timeout(Duration::from_secs(10), supervisor.shutdown_now())
                .await
                .expect("shutdown_now returns")
        });
        assert_eq!(
            report.abandoned(),
            report.abandoned_tasks().len(),
            "round {round}: a refused spawn shows as an unnamed abandoned task: {report}"
        );
    }
}
