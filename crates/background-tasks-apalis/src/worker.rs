//! Workers: a fetcher per job type and a task per running job, under the supervisor.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use apalis_core::worker::context::WorkerContext;
use background_tasks::{ShutdownReport, TaskContext, TaskId, TaskSupervisor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::context::JobContext;
use crate::error::DurableJobError;
use crate::id::JobId;
use crate::job::{BoxError, Job};
use crate::jobs::DurableJobs;
use crate::report::{DurableShutdownReport, ReturnedJob};
use crate::store::{Fetched, Outcome, run_at_after};

type JobFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
/// Deserializes a payload into the job type and starts its handler with its state.
type Decode = Arc<dyn Fn(&[u8], JobContext) -> Result<JobFuture, serde_json::Error> + Send + Sync>;

fn decoder<J: Job>(state: J::State) -> Decode {
    Arc::new(move |payload, ctx| {
        let job: J = serde_json::from_slice(payload)?;
        Ok(Box::pin(job.run(state.clone(), ctx)))
    })
}

#[derive(Clone)]
struct QueueSpec {
    name: &'static str,
    concurrency: usize,
    decode: Decode,
}

impl fmt::Debug for QueueSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueSpec")
            .field("name", &self.name)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Configures and starts the workers of one process; from [`DurableJobs::workers`].
///
/// Every setting that decides when a job is reclaimed is explicit here, with defaults
/// chosen so that a crashed process's jobs run again within seconds:
///
/// - the worker's name is unique per start (`<name>-<pid>-<ULID>`), so that a restarted
///   process never holds, nor waits for, its dead predecessor's locks;
/// - each job type's queue is its [`Job::NAME`], never the Rust type name;
/// - the heartbeat runs every [`heartbeat_interval`](Self::heartbeat_interval) (1 s), and the
///   jobs of a worker silent for [`orphan_after`](Self::orphan_after) (5 s) go back to the
///   queue (apalis's defaults are 30 s and 60 s).
///
/// # Examples
///
/// ```no_run
/// # use background_tasks::TaskSupervisor;
/// # use background_tasks_apalis::{BoxError, DurableJobs, Job, JobContext};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize;
/// # impl Job for Resize {
/// #     const NAME: &'static str = "resize";
/// #     type State = ();
/// #     async fn run(self, _: (), _: JobContext) -> Result<(), BoxError> { Ok(()) }
/// # }
/// # async fn start(jobs: DurableJobs, supervisor: TaskSupervisor) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
///
/// let workers = jobs
///     .workers(&supervisor)
///     .job::<Resize>(8, ())
///     .heartbeat_interval(Duration::from_secs(1))
///     .orphan_after(Duration::from_secs(5))
///     .retry_backoff(Duration::from_secs(1), Duration::from_secs(60))
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a WorkersBuilder does nothing until `start` is called"]
pub struct WorkersBuilder {
    jobs: DurableJobs,
    supervisor: TaskSupervisor,
    queues: Vec<QueueSpec>,
    name: String,
    heartbeat_interval: Duration,
    orphan_after: Duration,
    poll_interval: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl WorkersBuilder {
    /// How often the worker tells the database it is alive, and reclaims dead workers' jobs.
    pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
    /// How long a worker may stay silent before its jobs go back to the queue.
    pub const DEFAULT_ORPHAN_AFTER: Duration = Duration::from_secs(5);
    /// How often an idle fetcher looks for jobs that other processes enqueued.
    pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

    pub(crate) fn new(jobs: DurableJobs, supervisor: TaskSupervisor) -> Self {
        Self {
            jobs,
            supervisor,
            queues: Vec::new(),
            name: "worker".to_owned(),
            heartbeat_interval: Self::DEFAULT_HEARTBEAT_INTERVAL,
            orphan_after: Self::DEFAULT_ORPHAN_AFTER,
            poll_interval: Self::DEFAULT_POLL_INTERVAL,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// Runs jobs of type `J` with `state`, at most `concurrency` at once (at least 1). Given
    /// twice for the same [`Job::NAME`], the last one counts.
    pub fn job<J: Job>(mut self, concurrency: usize, state: J::State) -> Self {
        self.queues.retain(|queue| queue.name != J::NAME);
        self.queues.push(QueueSpec {
            name: J::NAME,
            concurrency: concurrency.max(1),
            decode: decoder::<J>(state),
        });
        self
    }

    /// The start of the worker's name in the database and in logs; a pid and a ULID are added
    /// so that every start is a new worker.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// How often the heartbeat runs (at least 1 s, the database's resolution).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_secs(1));
        self
    }

    /// How long a worker may be silent before other workers put its jobs back in the queue;
    /// the bound on how late a crashed process's jobs rerun, plus one heartbeat. Keep it a
    /// few heartbeats long, or a busy but live worker loses its jobs.
    pub fn orphan_after(mut self, after: Duration) -> Self {
        self.orphan_after = after.max(Duration::from_secs(1));
        self
    }

    /// How often an idle fetcher polls for jobs other processes enqueued; jobs this process
    /// enqueues wake its fetchers at once.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The wait before a failed job's retry: `base` after the first failure, doubled after
    /// each further one, never more than `max`; rounded up to whole seconds.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Registers the worker and starts one fetcher per job type as a supervised task, and the
    /// heartbeat.
    ///
    /// # Errors
    ///
    /// [`DurableJobError::ShuttingDown`] when the supervisor is shutting down, and
    /// [`DurableJobError::Unavailable`] when the worker cannot be registered.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves may leave the worker registered with nothing
    /// running; it holds no job.
    pub async fn start(self) -> Result<Workers, DurableJobError> {
        if self.supervisor.is_shutting_down() {
            return Err(DurableJobError::ShuttingDown);
        }
        let base = format!("{}-{}-{}", self.name, std::process::id(), JobId::generate());
        let store = &self.jobs.inner.store;
        let mut queues = Vec::with_capacity(self.queues.len());
        for spec in &self.queues {
            let worker = WorkerContext::new(&format!("{base}/{}", spec.name));
            store
                .register(&worker, spec.name)
                .await
                .map_err(DurableJobError::Unavailable)?;
            queues.push(Arc::new(Queue {
                spec: spec.clone(),
                worker,
                slots: Arc::new(Semaphore::new(spec.concurrency)),
                #[cfg(feature = "metrics")]
                running: self.jobs.inner.running.register(spec.name),
            }));
        }
        let shared = Arc::new(Shared {
            jobs: self.jobs.clone(),
            name: base,
            poll_interval: self.poll_interval,
            backoff_base: self.backoff_base,
            backoff_max: self.backoff_max,
            running: Mutex::new(HashMap::new()),
            released: Mutex::new(Vec::new()),
            fetchers: FetchersHandle(Arc::new(AtomicUsize::new(0))),
        });
        let heartbeat = tokio::spawn(heartbeat(
            shared.clone(),
            queues.clone(),
            self.heartbeat_interval,
            self.orphan_after,
        ));
        let workers = Workers {
            shared: shared.clone(),
            heartbeat,
            orphan_after: self.orphan_after,
        };
        for queue in queues {
            let shared = shared.clone();
            // Counted before the spawn, so that a reader never sees a running fetcher
            // uncounted; the fetcher's guard takes it back.
            shared.fetchers.0.fetch_add(1, Ordering::Relaxed);
            let counted = FetcherGuard(shared.fetchers.clone());
            self.supervisor
                .task(format!("durable-fetch {}", queue.spec.name))
                .spawn_with(move |ctx| async move {
                    let _counted = counted;
                    fetch(shared, queue, ctx).await;
                })
                .map_err(|_| DurableJobError::ShuttingDown)?;
        }
        tracing::info!(worker = %workers.shared.name, "durable workers started");
        Ok(workers)
    }
}

impl fmt::Debug for WorkersBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkersBuilder")
            .field("queues", &self.queues)
            .field("name", &self.name)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("orphan_after", &self.orphan_after)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

/// The running workers of one process.
///
/// At shutdown, hand the supervisor's report to [`finish`](Self::finish): it puts the jobs
/// that shutdown aborted back in the queue at once, without consuming an attempt, and names
/// them in its report. Without it they go back only when other workers see this one silent
/// for [`orphan_after`](WorkersBuilder::orphan_after), and with an attempt consumed.
pub struct Workers {
    shared: Arc<Shared>,
    heartbeat: JoinHandle<()>,
    orphan_after: Duration,
}

impl Workers {
    /// The worker's unique name, as the database's `Workers` rows and locks show it (one row
    /// per job type: `<name>/<queue>`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// A handle that counts this process's fetchers still running: one per job type until
    /// shutdown starts, then none. For status pages that count tasks of the supervisor and
    /// want to tell the fetchers from jobs.
    #[must_use]
    pub fn fetchers(&self) -> FetchersHandle {
        self.shared.fetchers.clone()
    }

    /// How many jobs this process runs now.
    #[must_use]
    pub fn running(&self) -> usize {
        self.shared.running().len()
    }

    /// Puts the jobs that the supervisor's shutdown aborted back in the queue, stops the
    /// heartbeat, and wraps `report` with the durable jobs returned to the queue.
    ///
    /// Call it with the report of the supervisor these workers run on, once its shutdown
    /// is over.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave some jobs locked; they go back to the queue after
    /// [`orphan_after`](WorkersBuilder::orphan_after).
    pub async fn finish(self, report: ShutdownReport) -> DurableShutdownReport {
        let aborted: Vec<(JobId, Running)> = self.shared.running().drain().collect();
        let mut returned = std::mem::take(&mut *lock(&self.shared.released));
        let mut not_returned = 0;
        let mut by_worker: HashMap<Arc<str>, Vec<(JobId, Running)>> = HashMap::new();
        for (id, running) in aborted {
            by_worker
                .entry(running.worker.clone())
                .or_default()
                .push((id, running));
        }
        for (worker, jobs) in by_worker {
            let ids: Vec<JobId> = jobs.iter().map(|(id, _)| id.clone()).collect();
            match self.shared.jobs.inner.store.release(&worker, &ids).await {
                Ok(released) => {
                    for (id, running) in jobs {
                        if released.contains(&id) {
                            #[cfg(feature = "metrics")]
                            crate::metrics::finished(
                                running.queue,
                                crate::metrics::Outcome::Returned,
                            );
                            returned.push(ReturnedJob {
                                queue: running.queue,
                                id,
                                task: running.task,
                            });
                        }
                    }
                }
                Err(error) => {
                    not_returned += ids.len();
                    tracing::error!(
                        %worker,
                        jobs = ids.len(),
                        "cannot put aborted durable jobs back in the queue ({error}): they go \
                         back when other workers find this one silent for {:?}",
                        self.orphan_after
                    );
                }
            }
        }
        self.heartbeat.abort();
        DurableShutdownReport::new(report, returned, not_returned)
    }
}

impl Drop for Workers {
    /// Without [`finish`](Self::finish), dropping the handle stops the heartbeat: the jobs
    /// still held go back to the queue once other workers find this one silent, as after a
    /// crash.
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl fmt::Debug for Workers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workers")
            .field("name", &self.shared.name)
            .field("running", &self.running())
            .finish_non_exhaustive()
    }
}

struct Shared {
    jobs: DurableJobs,
    name: String,
    poll_interval: Duration,
    backoff_base: Duration,
    backoff_max: Duration,
    /// The jobs this process has locked and not yet recorded an outcome for: what `finish`
    /// puts back after an abort.
    running: Mutex<HashMap<JobId, Running>>,
    /// Jobs put back in the queue because shutdown interrupted them, for the report.
    released: Mutex<Vec<ReturnedJob>>,
    fetchers: FetchersHandle,
}

/// Counts the fetchers of [`Workers`] that still run; from [`Workers::fetchers`].
#[derive(Debug, Clone)]
pub struct FetchersHandle(Arc<AtomicUsize>);

impl FetchersHandle {
    /// How many fetchers run: each is a task of the supervisor.
    #[must_use]
    pub fn running(&self) -> usize {
        // Relaxed: a count for display, publishing nothing else.
        self.0.load(Ordering::Relaxed)
    }
}

/// Takes a fetcher's count back when it ends, however it ends.
struct FetcherGuard(FetchersHandle);

impl Drop for FetcherGuard {
    fn drop(&mut self) {
        // Relaxed: see `FetchersHandle::running`.
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    fn running(&self) -> MutexGuard<'_, HashMap<JobId, Running>> {
        lock(&self.running)
    }

    fn backoff(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(31);
        self.backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_max)
    }
}

/// The locks here are held for a map operation only, never across an await; a panic while
/// holding one cannot leave the map half-changed, so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Clone)]
struct Running {
    queue: &'static str,
    worker: Arc<str>,
    /// The supervised task that runs it, once spawned.
    task: Option<TaskId>,
}

struct Queue {
    spec: QueueSpec,
    worker: WorkerContext,
    /// One permit per job that may run at once.
    slots: Arc<Semaphore>,
    /// How many of this job type's handlers run now, for `background_jobs_running`.
    #[cfg(feature = "metrics")]
    running: Arc<std::sync::atomic::AtomicUsize>,
}

/// The heartbeat: keeps this worker's rows alive and reclaims dead workers' jobs. A plain
/// tokio task, not a supervised one: it must outlive every job this process holds, through
/// the drain and the cancel phase, and `Workers::finish` stops it.
async fn heartbeat(
    shared: Arc<Shared>,
    queues: Vec<Arc<Queue>>,
    interval: Duration,
    orphan_after: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        for queue in &queues {
            let store = &shared.jobs.inner.store;
            match store
                .heartbeat(&queue.worker, queue.spec.name, orphan_after)
                .await
            {
                Ok(0) => {}
                Ok(reclaimed) => {
                    tracing::info!(
                        queue = queue.spec.name,
                        reclaimed,
                        "put back in the queue the jobs of workers silent for {orphan_after:?}"
                    );
                    shared.jobs.inner.enqueued.notify_waiters();
                }
                Err(error) => tracing::warn!(
                    queue = queue.spec.name,
                    "durable worker heartbeat failed: {error}"
                ),
            }
        }
    }
}

/// A job type's fetcher: takes jobs while slots are free, runs each as a supervised task, and
/// stops fetching as soon as shutdown starts.
async fn fetch(shared: Arc<Shared>, queue: Arc<Queue>, ctx: TaskContext) {
    let store = &shared.jobs.inner.store;
    let name = queue.spec.name;
    loop {
        let first = tokio::select! {
            biased;
            () = ctx.shutdown_started() => break,
            permit = queue.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let mut permits = vec![first];
        while let Ok(permit) = queue.slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // Registered before the fetch, so that an enqueue during it is not missed.
        let enqueued = shared.jobs.inner.enqueued.notified();
        let mut enqueued = std::pin::pin!(enqueued);
        enqueued.as_mut().enable();
        let fetched = match store.fetch(&queue.worker, name, permits.len()).await {
            Ok(fetched) => fetched,
            Err(error) => {
                tracing::warn!(queue = name, "cannot fetch durable jobs: {error}");
                drop(permits);
                tokio::select! {
                    biased;
                    () = ctx.shutdown_started() => break,
                    () = tokio::time::sleep(shared.poll_interval.max(Duration::from_millis(500))) => {}
                }
                continue;
            }
        };
        // Fewer jobs than free slots: the queue is drained for now. Waiting for the next
        // enqueue here or the next poll, rather than fetching again at once, spares an empty
        // fetch-and-lock transaction per wake-up while enqueues trickle in; the wake-up
        // registered above still catches an enqueue made during the fetch.
        let mut idle = fetched.len() < permits.len();
        let mut unstarted = Vec::new();
        for job in fetched {
            // Fetching stops at once: what came back after shutdown began goes back.
            let Some(permit) = permits.pop().filter(|_| !ctx.is_shutting_down()) else {
                unstarted.push(job.id);
                continue;
            };
            let id = job.id.clone();
            shared.running().insert(
                id.clone(),
                Running {
                    queue: name,
                    worker: queue.worker.name().into(),
                    task: None,
                },
            );
            // Named after the job type, never the job: task names label the dashboard's rows
            // and the core's metrics, and must come from a fixed set. The task's id ties the
            // two together in the shutdown report.
            let spawned = {
                let shared = shared.clone();
                let queue = queue.clone();
                ctx.task(name)
                    .spawn_with(move |task| run(shared, queue, job, task, permit))
            };
            match spawned {
                // A job that already ended has left the map: nothing to set.
                Ok(handle) => {
                    if let Some(running) = shared.running().get_mut(&id) {
                        running.task = Some(handle.id());
                    }
                }
                Err(_) => {
                    shared.running().remove(&id);
                    unstarted.push(id);
                }
            }
        }
        drop(permits);
        // Jobs that could not start (the supervisor at capacity) wait for the next poll
        // instead of being fetched again at once.
        idle |= !unstarted.is_empty();
        if !unstarted.is_empty()
            && let Err(error) = store.release(queue.worker.name(), &unstarted).await
        {
            tracing::error!(
                queue = name,
                "cannot put {} fetched jobs back in the queue: {error}",
                unstarted.len()
            );
        }
        if idle {
            tokio::select! {
                biased;
                () = ctx.shutdown_started() => break,
                () = enqueued => {}
                () = tokio::time::sleep(shared.poll_interval) => {}
            }
        }
    }
    tracing::debug!(queue = name, "durable fetcher stopped: shutdown started");
}

/// Runs one job and records how it ended.
async fn run(
    shared: Arc<Shared>,
    queue: Arc<Queue>,
    job: Fetched,
    task: TaskContext,
    _slot: OwnedSemaphorePermit,
) {
    let name = queue.spec.name;
    let attempt = job.attempts.saturating_add(1);
    let id = job.id.clone();
    let store_outcome = |outcome| record(&shared, &queue, &id, attempt, outcome);

    if job.attempts >= job.max_attempts {
        // Reclaimed from a dead worker after its last attempt: apalis put it back as pending.
        let error = format!(
            "its worker was lost during its last attempt ({} of {})",
            job.attempts, job.max_attempts
        );
        store_outcome(Outcome::Dead { error: &error }).await;
        fail(name, &id, error, None);
    }
    let ctx = JobContext::new(task.clone(), id.clone(), attempt, job.max_attempts);
    let handler = match (queue.spec.decode)(&job.payload, ctx) {
        Ok(handler) => handler,
        Err(error) => {
            let error = format!("its payload does not deserialize as `{name}`: {error}");
            store_outcome(Outcome::Killed { error: &error }).await;
            fail(name, &id, error, None);
        }
    };
    // Counted as running and timed from here until the handler ends, however it ends: a drop
    // by shutdown's abort included.
    #[cfg(feature = "metrics")]
    let handler_run = crate::metrics::HandlerRun::start(name, &queue.running);
    let ended = catch_panic(handler).await;
    #[cfg(feature = "metrics")]
    drop(handler_run);
    let (error, panic) = match ended {
        Ok(Ok(())) => {
            store_outcome(Outcome::Done).await;
            tracing::debug!(queue = name, %id, attempt, "durable job done");
            return;
        }
        Ok(Err(error)) if task.is_cancelled() => {
            let ids = [id.clone()];
            match shared
                .jobs
                .inner
                .store
                .release(queue.worker.name(), &ids)
                .await
            {
                Ok(released) if !released.is_empty() => {
                    shared.running().remove(&id);
                    #[cfg(feature = "metrics")]
                    crate::metrics::finished(name, crate::metrics::Outcome::Returned);
                    lock(&shared.released).push(ReturnedJob {
                        queue: name,
                        id: id.clone(),
                        task: Some(task.id()),
                    });
                    tracing::info!(
                        queue = name, %id,
                        "durable job interrupted by shutdown ({error}): back in the queue"
                    );
                }
                // Left in `running`: `finish` tries again.
                Ok(_) => {}
                Err(error) => tracing::warn!(
                    queue = name, %id,
                    "cannot put the interrupted job back in the queue yet: {error}"
                ),
            }
            return;
        }
        Ok(Err(error)) => (error.to_string(), None),
        Err(panic) => (panic_text(panic.as_ref()), Some(panic)),
    };
    if attempt >= job.max_attempts {
        store_outcome(Outcome::Dead { error: &error }).await;
    } else {
        let after = shared.backoff(attempt);
        let run_at = run_at_after(after);
        store_outcome(Outcome::Retry {
            error: &error,
            run_at,
        })
        .await;
        tracing::debug!(queue = name, %id, "durable job retries in {after:?}");
    }
    let message = format!(
        "durable job {name} {id} failed attempt {attempt} of {}{}: {error}",
        job.max_attempts,
        if attempt >= job.max_attempts {
            ", now dead"
        } else {
            ""
        }
    );
    fail(name, &id, message, panic);
}

/// Stores an attempt's outcome, trying again while the database is unavailable (a job that
/// ran is not forgotten because the database blinked); shutdown's abort ends the tries, and
/// `finish` then puts the job back.
async fn record(shared: &Shared, queue: &Queue, id: &JobId, attempt: u32, outcome: Outcome<'_>) {
    let store = &shared.jobs.inner.store;
    let mut wait = Duration::from_millis(100);
    loop {
        let again = match &outcome {
            Outcome::Done => Outcome::Done,
            Outcome::Retry { error, run_at } => Outcome::Retry {
                error,
                run_at: *run_at,
            },
            Outcome::Dead { error } => Outcome::Dead { error },
            Outcome::Killed { error } => Outcome::Killed { error },
        };
        match store.finish(queue.worker.name(), id, attempt, again).await {
            Ok(ours) => {
                if !ours {
                    tracing::warn!(
                        queue = queue.spec.name, %id,
                        "the job was reclaimed by another worker while it ran here (this worker \
                         was silent too long): its outcome here is dropped"
                    );
                }
                // Not counted when dropped: the run that counts is the other worker's.
                #[cfg(feature = "metrics")]
                if ours {
                    crate::metrics::finished(queue.spec.name, outcome.metric());
                }
                shared.running().remove(id);
                return;
            }
            Err(error) => {
                tracing::warn!(
                    queue = queue.spec.name, %id,
                    "cannot record the job's outcome, retrying in {wait:?}: {error}"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Ends the job's task with its failure, so that the supervisor's `on_failure` callback and
/// its tracing see it as they see an in-process task's panic. `resume_unwind` does not run the
/// panic hook: nothing is printed twice. (The core has no public way to report an error that
/// is not a panic; see the crate docs.)
fn fail(name: &str, id: &JobId, message: String, panic: Option<Box<dyn Any + Send>>) -> ! {
    tracing::warn!(queue = name, %id, "{message}");
    resume_unwind(panic.unwrap_or_else(|| Box::new(message)));
}

/// Polls `future`, catching a panic as an `Err` with its payload.
async fn catch_panic<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    })
    .await
}

fn panic_text(panic: &(dyn Any + Send)) -> String {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message");
    format!("panicked: {message}")
}
