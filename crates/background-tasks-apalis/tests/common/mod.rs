//! The crate's behaviours, written once and run on each backend (`sqlite.rs`, `postgres.rs`)
//! against a fresh database by the [`behaviours!`] macro.
//!
//! The storage keeps whole seconds (run_at, heartbeats), so these tests run in real time with
//! short jobs; every wait polls against a generous deadline.
// The behaviours are test bodies called from the `#[tokio::test]`s the macro declares: what
// clippy allows in tests (`allow-unwrap-in-tests`) holds here too.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use background_tasks::{TaskFailure, TaskSupervisor};
use background_tasks_apalis::{
    BoxError, DurableJobError, DurableJobs, EnqueueOptions, Job, JobContext, JobId, JobState,
    JobStatus, Workers,
};
use serde::{Deserialize, Serialize};

/// What the test jobs report back.
#[derive(Debug, Default)]
pub struct Probe {
    pub started: AtomicUsize,
    pub done: AtomicUsize,
    pub running: AtomicUsize,
    pub max_running: AtomicUsize,
    pub saw_cancel: AtomicUsize,
    pub starts: Mutex<Vec<Instant>>,
}

impl Probe {
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

/// Sleeps `ms`; when `cooperative`, stops early with an error on cancellation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sleep {
    pub ms: u64,
    pub cooperative: bool,
}

impl Job for Sleep {
    const NAME: &'static str = "test-sleep";
    type State = Arc<Probe>;

    async fn run(self, probe: Arc<Probe>, ctx: JobContext) -> Result<(), BoxError> {
        probe.started.fetch_add(1, Ordering::SeqCst);
        probe.starts.lock().expect("the probe").push(Instant::now());
        let now = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
        probe.max_running.fetch_max(now, Ordering::SeqCst);
        let sleep = tokio::time::sleep(Duration::from_millis(self.ms));
        let result = if self.cooperative {
            tokio::select! {
                () = sleep => Ok(()),
                () = ctx.cancelled() => {
                    probe.saw_cancel.fetch_add(1, Ordering::SeqCst);
                    Err("stopped: cancelled".into())
                }
            }
        } else {
            sleep.await;
            Ok(())
        };
        probe.running.fetch_sub(1, Ordering::SeqCst);
        if result.is_ok() {
            probe.done.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
}

/// Fails its first `failures` attempts (with an error, or a panic when `panic`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Flaky {
    pub failures: u32,
    pub panic: bool,
}

impl Job for Flaky {
    const NAME: &'static str = "test-flaky";
    type State = Arc<Probe>;

    async fn run(self, probe: Arc<Probe>, ctx: JobContext) -> Result<(), BoxError> {
        probe.started.fetch_add(1, Ordering::SeqCst);
        probe.starts.lock().expect("the probe").push(Instant::now());
        if ctx.attempt() <= self.failures {
            if self.panic {
                panic!("flaky panicked on attempt {}", ctx.attempt());
            }
            return Err(format!("flaky failed attempt {}", ctx.attempt()).into());
        }
        probe.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// The payload `Flaky`'s queue holds after a change of shape.
#[derive(Debug, Serialize, Deserialize)]
pub struct OldFlaky(pub String);

impl Job for OldFlaky {
    const NAME: &'static str = "test-flaky";
    type State = ();

    async fn run(self, (): (), _: JobContext) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A fresh database of one of the backends.
pub struct Db {
    pub url: String,
    /// What keeps the database alive: the temp directory of a SQLite file.
    pub _dir: Option<tempfile::TempDir>,
}

pub fn supervisor(
    drain: Duration,
    grace: Duration,
    failures: Arc<Mutex<Vec<TaskFailure>>>,
) -> TaskSupervisor {
    TaskSupervisor::builder()
        .shutdown_timeout(drain)
        .cancel_grace(grace)
        .on_failure(move |failure| failures.lock().expect("the failures").push(failure.clone()))
        .build()
}

pub struct Setup {
    pub supervisor: TaskSupervisor,
    pub jobs: DurableJobs,
    pub workers: Workers,
    pub probe: Arc<Probe>,
    pub failures: Arc<Mutex<Vec<TaskFailure>>>,
}

pub async fn start(db: &Db, drain: Duration, concurrency: usize) -> Setup {
    let failures = Arc::new(Mutex::new(Vec::new()));
    let supervisor = supervisor(drain, Duration::from_millis(300), failures.clone());
    let jobs = DurableJobs::builder(&db.url)
        .supervisor(&supervisor)
        .connect()
        .await
        .expect("the database opens");
    let probe = Arc::new(Probe::default());
    let workers = jobs
        .workers(&supervisor)
        .job::<Sleep>(concurrency, probe.clone())
        .job::<Flaky>(concurrency, probe.clone())
        .retry_backoff(Duration::from_secs(1), Duration::from_secs(1))
        .orphan_after(Duration::from_secs(2))
        .start()
        .await
        .expect("the workers start");
    Setup {
        supervisor,
        jobs,
        workers,
        probe,
        failures,
    }
}

pub async fn status(jobs: &DurableJobs, id: &JobId) -> JobStatus {
    jobs.status(id).await.expect("readable").expect("stored")
}

pub async fn wait_for(
    jobs: &DurableJobs,
    id: &JobId,
    timeout: Duration,
    done: impl Fn(&JobStatus) -> bool,
) -> JobStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let status = status(jobs, id).await;
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out; last status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn final_status(jobs: &DurableJobs, id: &JobId, timeout: Duration) -> JobStatus {
    wait_for(jobs, id, timeout, |status| status.state().is_final()).await
}

pub const LONG: Duration = Duration::from_secs(20);

pub fn sleep(ms: u64) -> Sleep {
    Sleep {
        ms,
        cooperative: false,
    }
}

pub async fn an_enqueued_job_runs_once_in_the_queue_named_by_the_job_and_is_done(db: &Db) {
    let setup = start(db, LONG, 2).await;
    let id = setup.jobs.enqueue(sleep(10)).await.unwrap();
    let status = final_status(&setup.jobs, &id, LONG).await;
    assert_eq!(status.state(), JobState::Done);
    assert_eq!(status.attempts(), 1);
    assert_eq!(
        status.queue(),
        "test-sleep",
        "the queue is Job::NAME, not the type name"
    );
    assert_eq!(setup.probe.started(), 1);
    let report = setup
        .workers
        .finish(setup.supervisor.shutdown().await)
        .await;
    assert!(report.returned().is_empty());
    assert!(report.is_clean(), "{report}");
}

pub async fn status_of_an_unknown_job_is_none(db: &Db) {
    let jobs = DurableJobs::connect(&db.url).await.unwrap();
    let unknown: JobId = "01ARZ3NDEKTSV4RRFFQ69G5FAV".parse().unwrap();
    assert!(jobs.status(&unknown).await.unwrap().is_none());
}

pub async fn a_delayed_job_starts_no_sooner_than_its_delay(db: &Db) {
    let setup = start(db, LONG, 2).await;
    let enqueued = Instant::now();
    let id = setup
        .jobs
        .enqueue_with(
            sleep(1),
            EnqueueOptions::new().delay(Duration::from_millis(1500)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(status(&setup.jobs, &id).await.state(), JobState::Pending);
    assert_eq!(
        final_status(&setup.jobs, &id, LONG).await.state(),
        JobState::Done
    );
    let started = setup.probe.starts.lock().unwrap()[0];
    assert!(
        started - enqueued >= Duration::from_millis(1500),
        "started after {:?}",
        started - enqueued
    );
}

pub async fn a_second_enqueue_with_the_same_key_returns_the_first_id_and_runs_nothing_more(
    db: &Db,
) {
    let setup = start(db, LONG, 2).await;
    let keyed = || EnqueueOptions::new().idempotency_key("order-7");
    let first = setup.jobs.enqueue_with(sleep(200), keyed()).await.unwrap();
    let second = setup.jobs.enqueue_with(sleep(200), keyed()).await.unwrap();
    assert_eq!(first, second);
    let other = setup
        .jobs
        .enqueue_with(sleep(1), EnqueueOptions::new().idempotency_key("order-8"))
        .await
        .unwrap();
    assert_ne!(first, other);
    final_status(&setup.jobs, &first, LONG).await;
    final_status(&setup.jobs, &other, LONG).await;
    // Still the same job after it is done.
    let again = setup.jobs.enqueue_with(sleep(200), keyed()).await.unwrap();
    assert_eq!(again, first);
    // The fetchers poll every 100 ms: a second job, had one been stored, would have started.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(setup.probe.started(), 2);
    assert_eq!(status(&setup.jobs, &first).await.state(), JobState::Done);
}

pub async fn a_failing_job_is_retried_with_backoff_then_dead_with_its_last_error(db: &Db) {
    let setup = start(db, LONG, 2).await;
    let id = setup
        .jobs
        .enqueue_with(
            Flaky {
                failures: 99,
                panic: false,
            },
            EnqueueOptions::new().max_attempts(3),
        )
        .await
        .unwrap();
    let failed = wait_for(&setup.jobs, &id, LONG, |s| s.state() != JobState::Pending).await;
    // Between attempts it waits for its retry as `failed`.
    let failed = if failed.state() == JobState::Running {
        wait_for(&setup.jobs, &id, LONG, |s| s.state() == JobState::Failed).await
    } else {
        failed
    };
    assert_eq!(failed.state(), JobState::Failed);
    let dead = final_status(&setup.jobs, &id, LONG).await;
    assert_eq!(dead.state(), JobState::Dead);
    assert_eq!(dead.attempts(), 3);
    assert_eq!(dead.last_error(), Some("flaky failed attempt 3"));
    let starts = setup.probe.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 3);
    for pair in starts.windows(2) {
        // A backoff of 1 s, in whole seconds: never less than the part of a second left.
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "{starts:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let failures = setup.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 3, "every failed attempt reaches on_failure");
    let last = failures[2].panic_message().unwrap_or_default().to_owned();
    assert!(
        last.contains("test-flaky") && last.contains("flaky failed attempt 3"),
        "{last}"
    );
    assert!(last.contains("now dead"), "{last}");
}

pub async fn a_job_that_fails_once_is_done_on_its_second_attempt_and_panics_count_as_failures(
    db: &Db,
) {
    let setup = start(db, LONG, 2).await;
    let flaky = setup
        .jobs
        .enqueue(Flaky {
            failures: 1,
            panic: false,
        })
        .await
        .unwrap();
    let panicky = setup
        .jobs
        .enqueue(Flaky {
            failures: 1,
            panic: true,
        })
        .await
        .unwrap();
    for id in [&flaky, &panicky] {
        let status = final_status(&setup.jobs, id, LONG).await;
        assert_eq!((status.state(), status.attempts()), (JobState::Done, 2));
    }
    let failures = setup.failures.lock().unwrap().clone();
    assert_eq!(failures.len(), 2);
    assert!(
        failures.iter().any(|f| f
            .panic_message()
            .unwrap_or_default()
            .contains("flaky panicked on attempt 1")),
        "{failures:?}"
    );
}

pub async fn a_payload_that_no_longer_deserializes_is_dead_at_once_and_the_worker_goes_on(db: &Db) {
    let setup = start(db, LONG, 2).await;
    let old = setup
        .jobs
        .enqueue(OldFlaky("v1 shape".into()))
        .await
        .unwrap();
    let dead = final_status(&setup.jobs, &old, LONG).await;
    assert_eq!(dead.state(), JobState::Dead);
    assert!(
        dead.last_error()
            .unwrap_or_default()
            .contains("does not deserialize as `test-flaky`"),
        "{dead:?}"
    );
    assert_eq!(setup.probe.started(), 0, "never handed to the handler");
    let good = setup
        .jobs
        .enqueue(Flaky {
            failures: 0,
            panic: false,
        })
        .await
        .unwrap();
    assert_eq!(
        final_status(&setup.jobs, &good, LONG).await.state(),
        JobState::Done
    );
    assert_eq!(setup.failures.lock().unwrap().len(), 1);
}

pub async fn a_job_type_runs_at_most_its_concurrency_at_once(db: &Db) {
    let setup = start(db, LONG, 3).await;
    let mut ids = Vec::new();
    for _ in 0..9 {
        ids.push(setup.jobs.enqueue(sleep(150)).await.unwrap());
    }
    for id in &ids {
        final_status(&setup.jobs, id, LONG).await;
    }
    assert_eq!(setup.probe.max_running.load(Ordering::SeqCst), 3);
}

pub async fn shutdown_stops_fetching_at_once_and_lets_running_jobs_finish_in_the_drain(db: &Db) {
    let setup = start(db, LONG, 4).await;
    let running = setup.jobs.enqueue(sleep(600)).await.unwrap();
    wait_for(&setup.jobs, &running, LONG, |s| {
        s.state() == JobState::Running
    })
    .await;
    let shutdown = tokio::spawn({
        let supervisor = setup.supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Refused from the supervisor's side...
    assert!(matches!(
        setup.jobs.enqueue(sleep(1)).await,
        Err(DurableJobError::ShuttingDown)
    ));
    // ...and what another process enqueues now is not fetched here.
    let other = DurableJobs::connect(&db.url).await.unwrap();
    let later = other.enqueue(sleep(1)).await.unwrap();
    let report = shutdown.await.unwrap();
    assert_eq!(status(&setup.jobs, &running).await.state(), JobState::Done);
    assert_eq!(status(&setup.jobs, &later).await.state(), JobState::Pending);
    assert_eq!(report.aborted(), 0, "{report}");
    let report = setup.workers.finish(report).await;
    assert!(report.returned().is_empty(), "{report}");
    assert_eq!(setup.probe.started(), 1);
}

pub async fn a_job_that_stops_when_cancelled_goes_back_to_the_queue_without_using_an_attempt(
    db: &Db,
) {
    let setup = start(db, Duration::from_millis(200), 4).await;
    let id = setup
        .jobs
        .enqueue(Sleep {
            ms: 60_000,
            cooperative: true,
        })
        .await
        .unwrap();
    wait_for(&setup.jobs, &id, LONG, |s| s.state() == JobState::Running).await;
    let report = setup.supervisor.shutdown().await;
    assert_eq!(setup.probe.saw_cancel.load(Ordering::SeqCst), 1);
    let report = setup.workers.finish(report).await;
    let returned: Vec<_> = report
        .returned()
        .iter()
        .map(|job| job.id().clone())
        .collect();
    assert_eq!(returned, std::slice::from_ref(&id));
    let status = status(&setup.jobs, &id).await;
    assert_eq!((status.state(), status.attempts()), (JobState::Pending, 0));
    assert!(
        setup.failures.lock().unwrap().is_empty(),
        "an interruption is no failure"
    );
}

pub async fn at_the_abort_unfinished_jobs_go_back_to_the_queue_at_once_and_are_named_in_the_report(
    db: &Db,
) {
    let setup = start(db, Duration::from_millis(200), 4).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(setup.jobs.enqueue(sleep(60_000)).await.unwrap());
    }
    for id in &ids {
        wait_for(&setup.jobs, id, LONG, |s| s.state() == JobState::Running).await;
    }
    // An in-process task that is lost, apart from the durable jobs.
    setup
        .supervisor
        .task("in-process")
        .spawn(std::future::pending::<()>())
        .unwrap();
    let began = Instant::now();
    let report = setup.supervisor.shutdown().await;
    let report = setup.workers.finish(report).await;
    let took = began.elapsed();
    assert!(took < Duration::from_millis(200 + 300 + 400), "{took:?}");
    assert_eq!(report.tasks().aborted(), 4, "{report}");
    let mut returned: Vec<_> = report
        .returned()
        .iter()
        .map(|job| job.id().clone())
        .collect();
    returned.sort();
    ids.sort();
    assert_eq!(returned, ids);
    let lost: Vec<_> = report.lost().iter().map(|task| task.name()).collect();
    assert_eq!(lost, [Some("in-process")]);
    assert!(
        report
            .to_string()
            .contains("; 3 durable jobs returned to the queue: test-sleep "),
        "{report}"
    );
    for id in &ids {
        let status = status(&setup.jobs, id).await;
        assert_eq!((status.state(), status.attempts()), (JobState::Pending, 0));
    }
    // A restart runs them.
    let again = start(db, LONG, 4).await;
    drop(setup.jobs);
    for id in &ids {
        wait_for(&again.jobs, id, LONG, |s| s.state() == JobState::Running).await;
    }
    let _ = again
        .workers
        .finish(again.supervisor.shutdown_now().await)
        .await;
}

/// apalis's pitfall: a worker restarted under its predecessor's name refreshes the dead
/// worker's row, so the jobs locked under that name never look orphaned. Both starts here use
/// the same name (`start` always names the workers `worker`); unique names per start are what
/// lets the jobs come back.
pub async fn a_worker_restarted_under_the_same_name_reruns_its_dead_predecessors_jobs_within_the_orphan_bound(
    db: &Db,
) {
    let first = start(db, LONG, 4).await;
    let id = first.jobs.enqueue(sleep(60_000)).await.unwrap();
    wait_for(&first.jobs, &id, LONG, |s| s.state() == JobState::Running).await;
    // A crash: the job's task ends without a word to the database and the heartbeat stops.
    let _ = first.supervisor.shutdown_now().await;
    let dead_name = first.workers.name().to_owned();
    drop(first.workers);

    let second = start(db, LONG, 4).await;
    assert!(
        dead_name.starts_with("worker-") && second.workers.name().starts_with("worker-"),
        "{dead_name}, {}",
        second.workers.name()
    );
    assert_ne!(
        second.workers.name(),
        dead_name,
        "a new start is a new worker"
    );
    let died = Instant::now();
    wait_for(&second.jobs, &id, LONG, |_| second.probe.started() == 1).await;
    let after = died.elapsed();
    // orphan_after is 2 s, the heartbeat 1 s, the clock whole seconds.
    assert!(after < Duration::from_secs(5), "rerun after {after:?}");
    let status = status(&second.jobs, &id).await;
    assert_eq!(status.attempts(), 1, "the lost run counts as an attempt");
    let _ = second
        .workers
        .finish(second.supervisor.shutdown_now().await)
        .await;
}

/// The same job under a new Rust type name: the queue is `Job::NAME`, so the new type's
/// workers run what the old type enqueued (apalis's default queue is the type name, and a
/// rename would silently strand the old jobs).
pub async fn a_renamed_job_type_with_the_same_name_runs_the_jobs_already_queued(db: &Db) {
    let jobs = DurableJobs::connect(&db.url).await.unwrap();
    let id = jobs.enqueue(sleep(1)).await.unwrap();
    assert_eq!(status(&jobs, &id).await.queue(), Sleep::NAME);

    let supervisor = TaskSupervisor::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let workers = jobs
        .workers(&supervisor)
        .job::<RenamedSleep>(1, ran.clone())
        .start()
        .await
        .unwrap();
    let done = final_status(&jobs, &id, LONG).await;
    assert_eq!(done.state(), JobState::Done);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let _ = workers.finish(supervisor.shutdown().await).await;
}

/// `Sleep`, renamed in a later version of the code.
#[derive(Debug, Serialize, Deserialize)]
pub struct RenamedSleep {
    pub ms: u64,
    pub cooperative: bool,
}

impl Job for RenamedSleep {
    const NAME: &'static str = "test-sleep";
    type State = Arc<AtomicUsize>;

    async fn run(self, ran: Arc<AtomicUsize>, _ctx: JobContext) -> Result<(), BoxError> {
        ran.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

pub async fn a_live_worker_keeps_its_jobs_past_the_orphan_bound(db: &Db) {
    let first = start(db, LONG, 4).await;
    let second = start(db, LONG, 4).await;
    let id = first.jobs.enqueue(sleep(4_000)).await.unwrap();
    let status = final_status(&first.jobs, &id, LONG).await;
    assert_eq!((status.state(), status.attempts()), (JobState::Done, 1));
    assert_eq!(
        first.probe.started() + second.probe.started(),
        1,
        "ran once"
    );
}

/// Declares one `#[tokio::test]` per behaviour, each on a fresh database from `$db` (an async
/// fn returning `Option<Db>`; `None` skips, after the backend said why).
/// The depth counts the jobs that wait: delayed, and failed with attempts left (waiting for
/// their retry); not the dead, nor the running, on either backend. Not a `behaviours!` entry:
/// it needs the `metrics` feature and a current-thread runtime of its own, for the
/// thread-local test recorder.
#[cfg(feature = "metrics")]
pub fn the_pending_gauge_counts_the_jobs_waiting_in_the_database(url: &str) {
    use background_tasks_e2e::recorder::{gauge, recorded};

    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let failures = Arc::default();
            let supervisor = supervisor(LONG, Duration::ZERO, failures);
            let jobs = DurableJobs::builder(url)
                .supervisor(&supervisor)
                .connect()
                .await
                .unwrap();
            let probe = Arc::new(Probe::default());
            let workers = jobs
                .workers(&supervisor)
                .job::<Sleep>(1, probe.clone())
                .job::<Flaky>(2, probe.clone())
                // A failed attempt waits a minute for its retry: pending all through the test.
                .retry_backoff(Duration::from_secs(60), Duration::from_secs(60))
                .start()
                .await
                .unwrap();
            let flaky = || Flaky {
                failures: 99,
                panic: false,
            };
            let retried = jobs
                .enqueue_with(flaky(), EnqueueOptions::new().max_attempts(3))
                .await
                .unwrap();
            let dead = jobs
                .enqueue_with(flaky(), EnqueueOptions::new().max_attempts(1))
                .await
                .unwrap();
            let delayed = EnqueueOptions::new().delay(Duration::from_secs(3600));
            jobs.enqueue_with(sleep(1), delayed).await.unwrap();
            let running = jobs.enqueue(sleep(60_000)).await.unwrap();
            wait_for(&jobs, &retried, LONG, |s| s.state() == JobState::Failed).await;
            assert_eq!(
                final_status(&jobs, &dead, LONG).await.state(),
                JobState::Dead
            );
            wait_for(&jobs, &running, LONG, |s| s.state() == JobState::Running).await;

            jobs.record_metrics().await.unwrap();
            let mut seen = std::collections::BTreeMap::new();
            let metrics = recorded(&snapshotter, &mut seen);
            assert_eq!(
                gauge(metrics, "background_jobs_pending{job=test-flaky}"),
                1.0
            );
            assert_eq!(
                gauge(metrics, "background_jobs_pending{job=test-sleep}"),
                1.0
            );
            let _ = workers.finish(supervisor.shutdown_now().await).await;
        });
    });
}

#[macro_export]
macro_rules! behaviours {
    ($db:path) => {
        $crate::behaviours!(@each $db;
            an_enqueued_job_runs_once_in_the_queue_named_by_the_job_and_is_done,
            status_of_an_unknown_job_is_none,
            a_delayed_job_starts_no_sooner_than_its_delay,
            a_second_enqueue_with_the_same_key_returns_the_first_id_and_runs_nothing_more,
            a_failing_job_is_retried_with_backoff_then_dead_with_its_last_error,
            a_job_that_fails_once_is_done_on_its_second_attempt_and_panics_count_as_failures,
            a_payload_that_no_longer_deserializes_is_dead_at_once_and_the_worker_goes_on,
            a_job_type_runs_at_most_its_concurrency_at_once,
            shutdown_stops_fetching_at_once_and_lets_running_jobs_finish_in_the_drain,
            a_job_that_stops_when_cancelled_goes_back_to_the_queue_without_using_an_attempt,
            at_the_abort_unfinished_jobs_go_back_to_the_queue_at_once_and_are_named_in_the_report,
            a_worker_restarted_under_the_same_name_reruns_its_dead_predecessors_jobs_within_the_orphan_bound,
            a_renamed_job_type_with_the_same_name_runs_the_jobs_already_queued,
            a_live_worker_keeps_its_jobs_past_the_orphan_bound,
        );
    };
    (@each $db:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(db) = $db(stringify!($name)).await else { return };
                common::$name(&db).await;
            }
        )*
    };
}
