//! A live view of the supervisor: what runs now, and what has happened since it was built.
//!
//! Nothing here is on the spawn path. The running tasks come from the registry's shards, which
//! already hold each suspended task's name and start; `spawned` comes from the id counter
//! every spawn already bumps; the outcomes of shutdown from its log, kept under the lock every
//! end during shutdown already takes. Only rare events (a panic, a refusal, an abort through a
//! handle, a failure) bump counters of their own, on their own cold paths. What a task that
//! returns normally adds is derived: `completed` is what is left of `spawned` once the running
//! tasks and every other outcome are taken away.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::failure::TaskFailure;
use crate::handle::TaskId;
use crate::registry::{Blocking, Kind, lock};
use crate::report::ShutdownReport;
use crate::state::Phase;
use crate::supervisor::{Inner, TaskSupervisor};
use crate::sync::{AtomicU64, Mutex};

/// How many failures a supervisor remembers for [`Snapshot::recent_failures`]: enough for a
/// dashboard to show what just went wrong, bounded so that a storm of failures costs nothing
/// more than a few.
pub const RECENT_FAILURES: usize = 32;

/// What a [`TaskSupervisor`] is doing, taken without stopping it: see
/// [`TaskSupervisor::snapshot`].
///
/// Counts are read one after another while tasks go on spawning and ending: under load they
/// may be off by the few tasks in flight at that instant, and are exact when nothing moves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Snapshot {
    /// Where the supervisor is in its life.
    pub phase: SupervisorPhase,
    /// How many tasks are running: the count [`TaskSupervisor::len`] gives.
    pub running: usize,
    /// The running tasks that have started, or (blocking ones) been queued, oldest first (the
    /// `limit` oldest, from [`TaskSupervisor::snapshot_oldest`]).
    ///
    /// An async task is listed from its first suspension on: one queued for its first poll, or
    /// inside it, is in [`running`](Self::running) but not here (recording it earlier would
    /// cost every short task a clock read and a lock).
    pub tasks: Vec<RunningTask>,
    /// The tasks in the registry (those [`tasks`](Self::tasks) would list without a limit)
    /// counted by name, most numerous first, then by name; unnamed tasks share one entry, with
    /// the name `None`.
    pub by_name: Vec<NameCount>,
    /// The age of the oldest task in the registry (listed or not), if any.
    pub oldest_age: Option<Duration>,
    /// How many of the running tasks wait for a place under their name's limit
    /// ([`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit)), not started: the sum
    /// of [`NameCount::waiting`].
    pub waiting: usize,
    /// What has happened since the supervisor was built.
    pub counters: Counters,
    /// The last [`RECENT_FAILURES`] failures, most recent first.
    pub recent_failures: Vec<RecentFailure>,
    /// How far shutdown has got, once it has begun.
    pub shutdown: Option<ShutdownProgress>,
}

/// Where a supervisor is in its life, as [`Snapshot::phase`] says. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SupervisorPhase {
    /// Accepting tasks.
    Running,
    /// Shutdown began: waiting for tasks to end within `shutdown_timeout`.
    Draining,
    /// The cancellation signal fired: tasks with a context get `cancel_grace`, the others are
    /// aborted.
    Cancelling,
    /// The budget ran out: what is left is aborted, and the report is being written.
    Aborting,
    /// The report is written.
    Finished,
}

impl SupervisorPhase {
    /// The phase's name in lowercase, as logs and JSON spell it.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::SupervisorPhase;
    ///
    /// assert_eq!(SupervisorPhase::Draining.as_str(), "draining");
    /// ```
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorPhase::Running => "running",
            SupervisorPhase::Draining => "draining",
            SupervisorPhase::Cancelling => "cancelling",
            SupervisorPhase::Aborting => "aborting",
            SupervisorPhase::Finished => "finished",
        }
    }
}

/// A running task in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunningTask {
    /// The task's id.
    pub id: TaskId,
    /// The task's name, if it was spawned with one.
    pub name: Option<Cow<'static, str>>,
    /// Async, on tokio's blocking pool, or a tracked future.
    pub kind: TaskKind,
    /// Whether it has started: an async task listed here has (it has suspended), unless it
    /// waits for a place under its name's limit; a blocking one has once a thread picked it
    /// up; a tracked future counts as started from when it was made, unless it waits for a
    /// place.
    pub started: bool,
    /// How long it has run: since its first suspension for an async task, since its spawn for
    /// a blocking one, since it was made for a tracked future; for one waiting for a place,
    /// how long it has waited.
    pub age: Duration,
}

/// What kind of task a [`RunningTask`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskKind {
    /// A future, spawned with `spawn` or `spawn_with`.
    Async,
    /// A closure on tokio's blocking pool, spawned with `spawn_blocking` or
    /// `spawn_blocking_with`.
    Blocking,
    /// A future that its owner polls, tracked with `track_future` or `track_future_with`.
    Tracked,
}

/// The running tasks of one name in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NameCount {
    /// The name, or `None` for the unnamed tasks.
    pub name: Option<Cow<'static, str>>,
    /// How many listed tasks have this name.
    pub running: usize,
    /// The age of the oldest of them.
    pub oldest_age: Duration,
    /// How many tasks of this name wait for a place under its limit
    /// ([`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit)), listed or not (a task
    /// is listed once it has first been polled). A limited name is in
    /// [`Snapshot::by_name`] while any of its tasks runs or waits.
    pub waiting: usize,
}

/// What has happened to a supervisor's tasks since it was built, in a [`Snapshot`].
///
/// Every spawned task ends with one outcome: `completed`, `panicked`, `cancelled`, `aborted`,
/// `abandoned` or `timed_out`. Once no task runs,
/// `spawned == completed + panicked + cancelled + aborted + abandoned + timed_out`, but for a
/// blocking task abandoned by shutdown that later panics on its thread, or runs past its
/// timeout, which is in both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Tasks spawned: admitted and handed to tokio.
    pub spawned: u64,
    /// Tasks that returned (a blocking task: whose closure returned), and, during the drain,
    /// tasks that ended in any way but a panic, as the [`ShutdownReport`] counts them.
    pub completed: u64,
    /// Tasks that panicked.
    pub panicked: u64,
    /// Tasks that ended during the cancel phase, as the [`ShutdownReport`] counts them, but for
    /// those that panicked.
    pub cancelled: u64,
    /// Tasks aborted: by shutdown (as the report counts them, from the moment its walk stops
    /// them), through their handle's [`abort`](crate::TaskHandle::abort), or dropped unfinished
    /// because their runtime shut down first.
    pub aborted: u64,
    /// Blocking tasks that shutdown left running on their thread, and tasks stuck in their
    /// first poll, as the report counts them.
    pub abandoned: u64,
    /// Tasks that ran past the timeout set with
    /// [`TaskBuilder::timeout`](crate::TaskBuilder::timeout): aborted by it, or ended on their
    /// own after its signal. One that shutdown stopped first is counted as the report counts
    /// it, `aborted` or `abandoned`.
    pub timed_out: u64,
    /// Spawns refused with [`SpawnError::ShuttingDown`](crate::SpawnError::ShuttingDown).
    pub refused_shutting_down: u64,
    /// Spawns refused with [`SpawnError::AtCapacity`](crate::SpawnError::AtCapacity).
    pub refused_at_capacity: u64,
    /// Spawns refused with [`SpawnError::QueueFull`](crate::SpawnError::QueueFull).
    pub refused_queue_full: u64,
}

/// A failure in [`Snapshot::recent_failures`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RecentFailure {
    /// The failure, as `on_failure` was told.
    pub failure: TaskFailure,
    /// When it was reported, by the wall clock.
    pub at: SystemTime,
    /// How long ago it was reported, by tokio's clock.
    pub ago: Duration,
}

/// How far a shutdown has got, in a [`Snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownProgress {
    /// Time since shutdown began.
    pub elapsed: Duration,
    /// The drain budget, [`TaskSupervisor::shutdown_timeout`].
    pub shutdown_timeout: Duration,
    /// The grace of the cancel phase, [`TaskSupervisor::cancel_grace`].
    pub cancel_grace: Duration,
    /// The report, once written.
    pub report: Option<ShutdownReport>,
}

/// The counters a snapshot cannot derive, bumped on cold paths only: a panic, a refusal, an
/// abort through a handle, a failure.
#[derive(Debug)]
pub(crate) struct Tally {
    /// Admissions whose task was never spawned: the closure building it panicked, after it had
    /// taken an id.
    pub(crate) unspawned: AtomicU64,
    pub(crate) panicked: AtomicU64,
    /// Tasks aborted through their handle while the supervisor ran.
    pub(crate) stopped: AtomicU64,
    pub(crate) refused_shutting_down: AtomicU64,
    pub(crate) refused_at_capacity: AtomicU64,
    pub(crate) refused_queue_full: AtomicU64,
    /// Tasks that ended past their timeout, whatever the phase.
    pub(crate) timed_out: AtomicU64,
    recent_failures: Mutex<VecDeque<(TaskFailure, SystemTime, Instant)>>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            unspawned: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            refused_shutting_down: AtomicU64::new(0),
            refused_at_capacity: AtomicU64::new(0),
            refused_queue_full: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            recent_failures: Mutex::new(VecDeque::new()),
        }
    }

    /// Counts one more of `counter`. Relaxed: a count read by snapshots, which order nothing
    /// by it.
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Remembers `failure` among the recent ones, forgetting the oldest beyond
    /// [`RECENT_FAILURES`].
    pub(crate) fn remember(&self, failure: &TaskFailure) {
        // A short hold: a push and maybe a pop. Only failures take it, and snapshots.
        let mut recent = lock(&self.recent_failures);
        if recent.len() == RECENT_FAILURES {
            recent.pop_back();
        }
        recent.push_front((failure.clone(), SystemTime::now(), Instant::now()));
    }
}

/// Relaxed load of a counter; see [`Tally::bump`].
fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Inner {
    fn snapshot(&self, limit: usize) -> Snapshot {
        let now = Instant::now();
        let mut tasks = Vec::with_capacity(self.state.running());
        // One shard at a time, each held only to copy its entries: spawns and ends on the
        // other shards go on meanwhile.
        for mut slab in self.registry.lock_all() {
            tasks.extend(slab.iter_mut().map(|entry| {
                let (kind, started) = match entry.kind {
                    Kind::Async(_) | Kind::Stopped => (TaskKind::Async, !entry.waiting),
                    Kind::Tracked { .. } => (TaskKind::Tracked, !entry.waiting),
                    Kind::Blocking { stage, .. } => {
                        (TaskKind::Blocking, stage == Blocking::Running)
                    }
                };
                RunningTask {
                    id: entry.id,
                    name: entry.name.clone(),
                    kind,
                    started,
                    age: now.saturating_duration_since(entry.started),
                }
            }));
        }
        // Names come from a small set (see the crate docs), so this map stays small.
        let mut names: HashMap<Option<&str>, (usize, Duration)> = HashMap::new();
        for task in &tasks {
            let (running, oldest) = names.entry(task.name.as_deref()).or_default();
            *running += 1;
            *oldest = (*oldest).max(task.age);
        }
        // Limited names count their waiting tasks, listed or not.
        let mut waiting = 0;
        for (name, limit) in self.config.limits.iter() {
            let queued = limit.waiting();
            waiting += queued;
            if queued != 0 {
                names.entry(Some(name)).or_default();
            }
        }
        let mut by_name: Vec<NameCount> = names
            .into_iter()
            .map(|(name, (running, oldest_age))| NameCount {
                name: name.map(|name| Cow::Owned(name.to_owned())),
                running,
                oldest_age,
                waiting: self
                    .config
                    .limits
                    .of(name)
                    .map_or(0, |limit| limit.waiting()),
            })
            .collect();
        by_name.sort_unstable_by(|a, b| b.running.cmp(&a.running).then(a.name.cmp(&b.name)));
        let oldest_first =
            |a: &RunningTask, b: &RunningTask| b.age.cmp(&a.age).then(a.id.cmp(&b.id));
        if limit < tasks.len() {
            // Linear: only the `limit` oldest are sorted.
            tasks.select_nth_unstable_by(limit, oldest_first);
            tasks.truncate(limit);
        }
        tasks.sort_unstable_by(oldest_first);
        let oldest_age = by_name.iter().map(|count| count.oldest_age).max();

        let (phase, counters, shutdown) = self.counters(now);
        let recent_failures = lock(&self.tally.recent_failures)
            .iter()
            .map(|(failure, at, reported)| RecentFailure {
                failure: failure.clone(),
                at: *at,
                ago: now.saturating_duration_since(*reported),
            })
            .collect();
        Snapshot {
            phase,
            running: self.state.running(),
            tasks,
            by_name,
            oldest_age,
            waiting,
            counters,
            recent_failures,
            shutdown,
        }
    }

    /// Tasks spawned so far: every admission takes an id, the first one 1.
    pub(crate) fn spawned(&self) -> u64 {
        // Relaxed: a count, as in `read`.
        let ids = self.next_id.load(Ordering::Relaxed) - 1;
        ids.saturating_sub(read(&self.tally.unspawned))
    }

    /// Tasks that ended, while the supervisor ran, in any way but a panic or an abort.
    pub(crate) fn completed_while_running(&self, running: usize) -> u64 {
        let failed = read(&self.tally.panicked)
            + read(&self.tally.stopped)
            + read(&self.tally.timed_out)
            // Relaxed: as in `read`.
            + self.dropped.load(Ordering::Relaxed) as u64;
        self.spawned()
            .saturating_sub(running as u64)
            .saturating_sub(failed)
    }

    fn counters(&self, now: Instant) -> (SupervisorPhase, Counters, Option<ShutdownProgress>) {
        let tally = &self.tally;
        // Under the shutdown lock, where every end during shutdown is counted, so that the
        // phase and the shutdown's counts agree.
        let log = self.lock_shutdown();
        let phase = self.state.phase();
        let running = self.state.running();
        let (panicked, stopped) = (read(&tally.panicked), read(&tally.stopped));
        // Relaxed: as in `read`.
        let dropped = self.dropped.load(Ordering::Relaxed) as u64;
        let mut counters = Counters {
            spawned: self.spawned(),
            panicked,
            aborted: stopped + dropped,
            refused_shutting_down: read(&tally.refused_shutting_down),
            refused_at_capacity: read(&tally.refused_at_capacity),
            refused_queue_full: read(&tally.refused_queue_full),
            timed_out: read(&tally.timed_out),
            ..Counters::default()
        };
        let Some(started) = log.started else {
            counters.completed = self.completed_while_running(running);
            return (SupervisorPhase::Running, counters, None);
        };
        // Ends counted outside the log neither panicked nor timed out.
        let (completed, cancelled) = self.completed_and_cancelled();
        counters.completed = (log.completed_before + log.completed + completed
            - log.panicked_draining
            - log.timed_out_draining) as u64;
        counters.cancelled =
            (log.cancelled + cancelled - log.panicked_cancelling - log.timed_out_cancelling) as u64;
        counters.timed_out = counters
            .timed_out
            .saturating_sub(log.timed_out_by_shutdown as u64);
        let report = log.abort.as_ref().and_then(|abort| abort.report.clone());
        let (aborted, abandoned) = match (&report, &log.abort) {
            (Some(report), _) => (report.aborted(), report.abandoned()),
            (None, Some(abort)) => (abort.aborted.len(), abort.abandoned.len()),
            (None, None) => (log.aborted_early.len(), 0),
        };
        counters.aborted += aborted as u64;
        counters.abandoned = abandoned as u64;
        let phase = match (phase, &report) {
            (Phase::Running, _) => SupervisorPhase::Running,
            (Phase::Draining, _) => SupervisorPhase::Draining,
            (Phase::Cancelling, _) => SupervisorPhase::Cancelling,
            (Phase::Done, None) => SupervisorPhase::Aborting,
            (Phase::Done, Some(_)) => SupervisorPhase::Finished,
        };
        let progress = ShutdownProgress {
            elapsed: now.saturating_duration_since(started),
            shutdown_timeout: self.config.shutdown_timeout,
            cancel_grace: self.config.cancel_grace,
            report,
        };
        (phase, counters, Some(progress))
    }
}

impl TaskSupervisor {
    /// What the supervisor is doing now: its phase, its running tasks (with their names, kinds
    /// and ages, oldest first), their counts by name, counters since it was built, its recent
    /// failures and, once shutdown has begun, how far it has got.
    ///
    /// Nothing stops meanwhile: each shard of the task registry is locked in turn, just long
    /// enough to copy its entries, so a spawn or an end waits at most for one shard's copy.
    /// The cost grows with the number of running tasks (see `docs/benchmarks.md` for the
    /// figures at 100 000); spawning costs nothing more for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::{SupervisorPhase, TaskSupervisor};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::new();
    /// supervisor.task("resize").spawn(std::future::pending::<()>()).unwrap();
    /// supervisor.task("noop").spawn(async {}).unwrap();
    /// tokio::time::sleep(Duration::from_secs(3)).await;
    ///
    /// let snapshot = supervisor.snapshot();
    /// assert_eq!(snapshot.phase, SupervisorPhase::Running);
    /// assert_eq!(snapshot.running, 1);
    /// assert_eq!(snapshot.tasks[0].name.as_deref(), Some("resize"));
    /// assert_eq!(snapshot.oldest_age, Some(Duration::from_secs(3)));
    /// assert_eq!(snapshot.counters.spawned, 2);
    /// assert_eq!(snapshot.counters.completed, 1);
    /// # }
    /// ```
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot(usize::MAX)
    }

    /// As [`snapshot`](Self::snapshot), but listing only the `limit` oldest running tasks in
    /// [`Snapshot::tasks`]: what a dashboard shows of 100 000 tasks. The counts by name, the
    /// oldest age and the counters still cover every task.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::new();
    /// for _ in 0..3 {
    ///     supervisor.task("poll").spawn(std::future::pending::<()>()).unwrap();
    /// }
    /// tokio::task::yield_now().await;
    ///
    /// let snapshot = supervisor.snapshot_oldest(1);
    /// assert_eq!(snapshot.tasks.len(), 1);
    /// assert_eq!(snapshot.by_name[0].running, 3);
    /// # }
    /// ```
    #[must_use]
    pub fn snapshot_oldest(&self, limit: usize) -> Snapshot {
        self.inner.snapshot(limit)
    }
}
