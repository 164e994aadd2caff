//! A randomized stress suite of the accounting protocol: many seeds, every kind of task (on
//! the current runtime, on a runtime handle, on the blocking pool, and tracked futures polled
//! by tasks of their own; under a name's limit, waiting for a place; with a timeout), several threads spawning while the supervisor shuts down (refused in every phase, from
//! outside and, once the cancel phase begins, from inside), tasks that complete, panic,
//! return on the cancellation signal, ignore it, never suspend, or hold their thread; shut
//! down by `shutdown`, `shutdown_now`, several callers at once, a force in the middle, or a
//! driver whose runtime is dropped under it.
//!
//! The one assertion, for every seed: `completed + cancelled + aborted + abandoned` equals the
//! tasks admitted and not ended before the shutdown began, every caller gets that same
//! report, and no call waits past its budget plus 100 ms. Tasks wait at a gate that opens once
//! the shutdown has begun, so the only ones that end before it are those the test awaits
//! first.
//!
//! `STRESS_SEEDS` sets how many seeds run (default 48), `STRESS_FIRST_SEED` the first one;
//! a failure names its seed, which replays with `STRESS_FIRST_SEED=<seed> STRESS_SEEDS=1`.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use background_tasks::{Counters, Limit, ShutdownReport, SpawnError, TaskContext, TaskSupervisor};
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// What a call may take past its budget: the wait for tasks the abort walk could not see
/// (80 ms at most) and the report.
const SLACK: Duration = Duration::from_millis(100);

/// The name a seed may set a limit for.
const LIMITED: &str = "limited";

/// How the tasks' own panics start.
const PANIC: &str = "a stress task's panic";

/// The tests of this file one at a time: each loads both cores of the machine it was sized
/// for, and the time bound is about one test's load, not two.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn every_admitted_task_is_reported_once_and_no_shutdown_call_outlives_its_budget() {
    let _alone = one_at_a_time();
    let seeds = env_number("STRESS_SEEDS", 48);
    let first = env_number("STRESS_FIRST_SEED", 1);
    // The tasks' own panics are part of the test: only the others are printed.
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info.payload().downcast_ref::<&str>().copied().unwrap_or("");
        if !message.starts_with(PANIC) {
            print(info);
        }
    }));
    let started = Instant::now();
    let (mut timed_out, mut queue_full) = (0, 0);
    for seed in first..first + seeds {
        let counters = run(seed);
        timed_out += counters.timed_out;
        queue_full += counters.refused_queue_full;
    }
    eprintln!(
        "{seeds} seeds from {first} in {:.1?}: {timed_out} tasks timed out, {queue_full} \
         spawns refused by a full queue",
        started.elapsed()
    );
    // The suite exercises what it says it does: over enough seeds, both happen.
    if seeds >= 16 {
        assert!(
            timed_out > 0 && queue_full > 0,
            "{timed_out} timeouts, {queue_full} refusals"
        );
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}

/// How the supervisor is shut down.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// One `shutdown()`.
    Shutdown,
    /// One `shutdown_now()`.
    Now,
    /// `shutdown()`, then `shutdown_now()` from another thread during the phases.
    ForcedDuring,
    /// Three `shutdown()` callers on three threads.
    Concurrent,
    /// A `shutdown()` on a runtime of its own, dropped with the driver, then `shutdown()`.
    DroppedDriver,
}

const ENDINGS: [Ending; 5] = [
    Ending::Shutdown,
    Ending::Now,
    Ending::ForcedDuring,
    Ending::Concurrent,
    Ending::DroppedDriver,
];

/// Runs one seed; returns the supervisor's counters once every task has ended.
fn run(seed: u64) -> Counters {
    let mut random = Random::new(seed);
    let shutdown_timeout = Duration::from_millis(random.below(60));
    let cancel_grace = Duration::from_millis(random.below(40));
    let ending = ENDINGS[random.below(ENDINGS.len() as u64) as usize];
    let max_tasks = random.chance(4).then(|| 20 + random.below(200) as usize);
    let name_limit = random
        .chance(2)
        .then(|| Limit::new(1 + random.below(4) as usize).queue(random.below(30) as usize));
    let spawners = 1 + random.below(3);
    let context = format!(
        "seed {seed}: {ending:?}, shutdown_timeout {shutdown_timeout:?}, cancel_grace \
         {cancel_grace:?}, max_tasks {max_tasks:?}, limit of {LIMITED:?} {name_limit:?}, \
         {spawners} spawning threads"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut builder = TaskSupervisor::builder()
        .shutdown_timeout(shutdown_timeout)
        .cancel_grace(cancel_grace);
    if let Some(limit) = max_tasks {
        builder = builder.max_tasks(limit);
    }
    if let Some(limit) = name_limit {
        builder = builder.limit(LIMITED, limit);
    }
    let supervisor = builder.build();
    let shared = Arc::new(Shared {
        supervisor: supervisor.clone(),
        gate: Gate::default(),
        admitted: AtomicUsize::new(0),
        stuck_left: AtomicUsize::new(1),
    });

    // Tasks that end before the shutdown begins, awaited (or aborted and awaited) here: they
    // are not in the report.
    let before = runtime.block_on(async {
        let mut handles = Vec::new();
        for _ in 0..random.below(20) {
            let ends = random.below(3);
            let spawned = match ends {
                0 => supervisor.spawn(async {}),
                1 => supervisor
                    .spawn_with(|_| async { panic!("a stress task's panic, before the shutdown") }),
                _ => supervisor
                    .task("waits-forever")
                    .spawn(std::future::pending::<()>())
                    .inspect(|handle| handle.abort()),
            };
            if let Ok(handle) = spawned {
                handles.push(handle);
            }
        }
        let count = handles.len();
        for handle in handles {
            let _ = handle.await;
        }
        count
    });
    shared.admitted.fetch_add(before, Ordering::SeqCst);

    // Threads that spawn until the shutdown began and then some more, refused.
    let spawning = Arc::new(AtomicBool::new(true));
    let threads: Vec<_> = (0..spawners)
        .map(|thread| {
            let (shared, spawning) = (shared.clone(), spawning.clone());
            let handle = runtime.handle().clone();
            let mut random = Random::new(seed * 1_000 + thread);
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                let mut refused_after = 0;
                while refused_after < 50 {
                    if !spawning.load(Ordering::SeqCst) {
                        refused_after += 1;
                    }
                    spawn_one(&shared, &mut random, None);
                    if shared.supervisor.is_shutting_down() {
                        // Refused from now on, in every phase, but at a pace that leaves the
                        // cores to the shutdown being timed: a thread spinning on refusals
                        // is load the bound is not about.
                        std::thread::sleep(Duration::from_micros(200));
                    } else if random.chance(8) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(random.below(15)));

    let budget = match ending {
        Ending::Now => Duration::ZERO,
        _ => shutdown_timeout + cancel_grace,
    };
    let reports = match ending {
        Ending::Shutdown => vec![timed(&runtime, &shared, budget, &context, |s| async move {
            s.shutdown().await
        })],
        Ending::Now => vec![timed(&runtime, &shared, budget, &context, |s| async move {
            s.shutdown_now().await
        })],
        Ending::ForcedDuring => {
            let delay = Duration::from_millis(random.below(budget.as_millis() as u64 + 1));
            let forcer = std::thread::spawn({
                let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
                let context = context.clone();
                move || {
                    std::thread::sleep(delay);
                    let called = Instant::now();
                    let report = handle.block_on(supervisor.shutdown_now());
                    assert_within(called, Duration::ZERO, &context, "shutdown_now()");
                    report
                }
            });
            let report = timed(&runtime, &shared, budget, &context, |s| async move {
                s.shutdown().await
            });
            vec![report, forcer.join().expect("the forcing thread")]
        }
        Ending::Concurrent => {
            let callers: Vec<_> = (0..2)
                .map(|_| {
                    let (supervisor, handle) = (supervisor.clone(), runtime.handle().clone());
                    let context = context.clone();
                    std::thread::spawn(move || {
                        let called = Instant::now();
                        let report = handle.block_on(supervisor.shutdown());
                        assert_within(called, budget, &context, "a concurrent shutdown()");
                        report
                    })
                })
                .collect();
            let mut reports = vec![timed(&runtime, &shared, budget, &context, |s| async move {
                s.shutdown().await
            })];
            reports.extend(callers.into_iter().map(|c| c.join().expect("a caller")));
            reports
        }
        Ending::DroppedDriver => {
            let cut_after = Duration::from_millis(random.below(budget.as_millis() as u64 + 10));
            let driver_runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let called = Instant::now();
            let early = driver_runtime.block_on(async {
                let mut shutdown = pin!(supervisor.shutdown());
                // Begun at the first poll; the driver runs on this runtime.
                std::future::poll_fn(|cx| {
                    let _ = shutdown.as_mut().poll(cx);
                    Poll::Ready(())
                })
                .await;
                shared.gate.open();
                tokio::time::timeout(cut_after, shutdown).await.ok()
            });
            drop(driver_runtime);
            let report = runtime.block_on(supervisor.shutdown());
            assert_within(
                called,
                budget,
                &context,
                "shutdown() after the dropped driver",
            );
            early.into_iter().chain([report]).collect()
        }
    };

    spawning.store(false, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("a spawning thread");
    }
    // Every task's thread is given back before the counts are read: a task stuck in a poll
    // may still be inside the spawn it made just before admission closed.
    runtime.shutdown_timeout(Duration::from_secs(10));
    let counters = supervisor.snapshot().counters;

    let admitted = shared.admitted.load(Ordering::SeqCst) - before;
    for report in &reports {
        assert_eq!(
            report.completed() + report.cancelled() + report.aborted() + report.abandoned(),
            admitted,
            "{context}: the report does not count every task admitted and not ended before \
             the shutdown exactly once: {report:#}"
        );
        assert_eq!(
            counts(report),
            counts(&reports[0]),
            "{context}: two callers got different reports"
        );
    }
    counters
}

fn counts(report: &ShutdownReport) -> [usize; 4] {
    [
        report.completed(),
        report.cancelled(),
        report.aborted(),
        report.abandoned(),
    ]
}

/// Calls `shutdown` on the test's runtime, opens the gate once the shutdown has begun, and
/// checks the time the call took.
fn timed<F, Fut>(
    runtime: &tokio::runtime::Runtime,
    shared: &Shared,
    budget: Duration,
    context: &str,
    shutdown: F,
) -> ShutdownReport
where
    F: FnOnce(TaskSupervisor) -> Fut,
    Fut: Future<Output = ShutdownReport>,
{
    let called = Instant::now();
    let report = runtime.block_on(async {
        let mut shutdown = pin!(shutdown(shared.supervisor.clone()));
        std::future::poll_fn(|cx| {
            let polled = shutdown.as_mut().poll(cx);
            // After the first poll, which begins the shutdown.
            shared.gate.open();
            polled
        })
        .await
    });
    assert_within(called, budget, context, "shutdown");
    report
}

#[track_caller]
fn assert_within(called: Instant, budget: Duration, context: &str, call: &str) {
    let took = called.elapsed();
    assert!(
        took <= budget + SLACK,
        "{context}: {call} took {took:?}, past its budget {budget:?} + {SLACK:?}"
    );
}

/// What the tasks of one seed share.
struct Shared {
    supervisor: TaskSupervisor,
    gate: Gate,
    /// Spawns that returned `Ok`, from every thread and task.
    admitted: AtomicUsize,
    /// How many more tasks may hold a runtime worker in their first poll: one, so that the
    /// runtime always has a free worker for the shutdown's timers.
    stuck_left: AtomicUsize,
}

/// Spawns one task of a random kind, from outside (`ctx` is `None`) or from a task.
fn spawn_one(shared: &Arc<Shared>, random: &mut Random, ctx: Option<&TaskContext>) {
    let seed = random.next();
    let behaviour = Behaviour::pick(&mut Random::new(seed), shared);
    let shared_task = shared.clone();
    let spawned: Result<(), SpawnError> = match (random.below(10), ctx) {
        (0, None) => shared
            .supervisor
            .spawn(behaviour.run_plain(shared_task))
            .map(drop),
        (0, Some(ctx)) => ctx.spawn(behaviour.run_plain(shared_task)).map(drop),
        (1, None) => shared
            .supervisor
            .task("named")
            .spawn(behaviour.run_plain(shared_task))
            .map(drop),
        (1, Some(ctx)) => ctx
            .task("follow-up")
            .spawn(behaviour.run_plain(shared_task))
            .map(drop),
        (2, None) => shared
            .supervisor
            .spawn_with(move |ctx| behaviour.run_with(shared_task, ctx, seed))
            .map(drop),
        (2, Some(ctx)) => ctx
            .spawn_with(move |ctx| behaviour.run_with(shared_task, ctx, seed))
            .map(drop),
        (3, _) => shared
            .supervisor
            .task("with-name")
            .spawn_with(move |ctx| behaviour.run_with(shared_task, ctx, seed))
            .map(drop),
        (4, _) => shared
            .supervisor
            .spawn_blocking(move || behaviour.run_blocking(&shared_task, None))
            .map(drop),
        (5, None) => shared
            .supervisor
            .spawn_on(behaviour.run_plain(shared_task), &Handle::current())
            .map(drop),
        (5, Some(ctx)) => ctx
            .spawn_on(behaviour.run_plain(shared_task), &Handle::current())
            .map(drop),
        // Polled by a task of its own, which shutdown cannot abort: it is abandoned instead.
        (6, None) => shared
            .supervisor
            .track_future(behaviour.run_plain(shared_task))
            .map(|tracked| drop(tokio::spawn(tracked))),
        (6, Some(ctx)) => ctx
            .track_future(behaviour.run_plain(shared_task))
            .map(|tracked| drop(tokio::spawn(tracked))),
        (7, _) => shared
            .supervisor
            .spawn_blocking_with(move |ctx| behaviour.run_blocking(&shared_task, Some(&ctx)))
            .map(drop),
        // Under the name's limit, if the seed set one: beyond it, waiting for a place.
        (8, None) => shared
            .supervisor
            .task(LIMITED)
            .spawn(behaviour.run_plain(shared_task))
            .map(drop),
        (8, Some(ctx)) => ctx
            .task(LIMITED)
            .spawn_with(move |ctx| behaviour.run_with(shared_task, ctx, seed))
            .map(drop),
        // A timeout that fires only after the shutdown began, so that every task ends after it:
        // from outside, one too long to fire during the seed; from a task (spawned once the
        // gate opened), one that may fire in any phase of the shutdown.
        (_, None) => shared
            .supervisor
            .task("timed")
            .timeout(Duration::from_secs(3_600))
            .spawn(behaviour.run_plain(shared_task))
            .map(drop),
        (_, Some(ctx)) => ctx
            .task("timed")
            .timeout(Duration::from_millis(random.below(60)))
            .spawn_with(move |ctx| behaviour.run_with(shared_task, ctx, seed))
            .map(drop),
    };
    match spawned {
        Ok(()) => {
            shared.admitted.fetch_add(1, Ordering::SeqCst);
        }
        Err(
            SpawnError::ShuttingDown | SpawnError::AtCapacity { .. } | SpawnError::QueueFull { .. },
        ) => {}
        Err(error) => panic!("unexpected refusal: {error}"),
    }
}

/// What a task does once the gate opens.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Return,
    Panic,
    /// Sleeps, on the runtime's timer (async) or its thread (blocking).
    Sleep(Duration),
    /// Waits for the cancellation signal where it has a context, forever otherwise.
    UntilCancelled,
    /// Never ends by itself.
    Forever,
    /// Holds its runtime worker in its first poll, never suspending, then returns.
    StuckInFirstPoll(Duration),
    /// Spawns follow-ups through its context, then waits for the cancellation signal.
    FollowUps(u64),
}

impl Behaviour {
    fn pick(random: &mut Random, shared: &Shared) -> Self {
        match random.below(16) {
            0..=2 => Self::Return,
            3 => Self::Panic,
            4..=7 => Self::Sleep(Duration::from_millis(random.below(120))),
            8..=10 => Self::UntilCancelled,
            11 | 12 => Self::Forever,
            13 if shared
                .stuck_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                })
                .is_ok() =>
            {
                Self::StuckInFirstPoll(Duration::from_millis(random.below(150)))
            }
            _ => Self::FollowUps(1 + random.below(4)),
        }
    }

    async fn run_plain(self, shared: Arc<Shared>) {
        if let Self::StuckInFirstPoll(hold) = self {
            return stuck_in_first_poll(&shared, hold);
        }
        shared.gate.wait().await;
        match self {
            Self::Return | Self::FollowUps(_) => {}
            Self::Panic => panic!("a stress task's panic"),
            Self::Sleep(duration) => tokio::time::sleep(duration).await,
            Self::UntilCancelled | Self::Forever => std::future::pending().await,
            Self::StuckInFirstPoll(_) => unreachable!("handled above"),
        }
    }

    async fn run_with(self, shared: Arc<Shared>, ctx: TaskContext, seed: u64) {
        if let Self::StuckInFirstPoll(hold) = self {
            return stuck_in_first_poll(&shared, hold);
        }
        shared.gate.wait().await;
        match self {
            Self::Return => {}
            Self::Panic => panic!("a stress task's panic"),
            Self::Sleep(duration) => tokio::time::sleep(duration).await,
            Self::UntilCancelled => ctx.cancelled().await,
            Self::Forever => std::future::pending().await,
            Self::FollowUps(count) => {
                let mut random = Random::new(seed ^ 0x5eed);
                for _ in 0..count {
                    spawn_one(&shared, &mut random, Some(&ctx));
                    tokio::task::yield_now().await;
                }
                ctx.cancelled().await;
            }
            Self::StuckInFirstPoll(_) => unreachable!("handled above"),
        }
    }

    fn run_blocking(self, shared: &Shared, ctx: Option<&TaskContext>) {
        shared.gate.wait_blocking();
        match self {
            Self::Return | Self::FollowUps(_) => {}
            Self::Panic => panic!("a stress task's panic, blocking"),
            Self::Sleep(duration) | Self::StuckInFirstPoll(duration) => {
                std::thread::sleep(duration);
            }
            // Bounded, so that the runtime's drop at the end of the seed does not wait long.
            Self::UntilCancelled | Self::Forever => {
                const AT_MOST: Duration = Duration::from_millis(300);
                match ctx {
                    // Asleep on the token, not polling it: see `Gate`.
                    Some(ctx) => {
                        let cancelled = ctx.cancellation_token();
                        let _ = tokio::runtime::Handle::current()
                            .block_on(tokio::time::timeout(AT_MOST, cancelled.cancelled()));
                    }
                    None => std::thread::sleep(AT_MOST),
                }
            }
        }
    }
}

/// Never suspends: waits for the gate and then `hold`, on its worker thread.
fn stuck_in_first_poll(shared: &Shared, hold: Duration) {
    shared.gate.wait_blocking();
    std::thread::sleep(hold);
}

/// Opens once the shutdown has begun. Waiters sleep until then, on a `Notify` or a `Condvar`:
/// hundreds of blocking tasks polling a flag would load the machine whose timing the suite
/// checks.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    opened: Notify,
    /// The same flag for blocking waiters, under the lock their `Condvar` needs.
    open_blocking: std::sync::Mutex<bool>,
    opened_blocking: std::sync::Condvar,
}

impl Gate {
    fn open(&self) {
        if !self.open.swap(true, Ordering::SeqCst) {
            self.opened.notify_waiters();
            *self.lock() = true;
            self.opened_blocking.notify_all();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, bool> {
        self.open_blocking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn wait(&self) {
        let mut opened = pin!(self.opened.notified());
        loop {
            // Registered before the flag is read, so that an open in between still wakes it.
            opened.as_mut().enable();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            opened.as_mut().await;
            opened.set(self.opened.notified());
        }
    }

    fn wait_blocking(&self) {
        let open = self.lock();
        drop(
            self.opened_blocking
                .wait_while(open, |open| !*open)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

/// splitmix64: enough randomness for a test, and the same for a seed on every machine.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 { 0 } else { self.next() % bound }
    }

    /// True one time in `n`.
    fn chance(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
}

/// Blocking follow-ups admitted during the drain that reach their shard lock only after the
/// abort walk are tasks, aborted before they start, not refusals: a refusal's give-back could
/// come after the report was written, which then counted a task that never was. The report
/// counts exactly the tasks whose spawn returned `Ok`.
#[test]
fn follow_ups_admitted_before_the_abort_walk_are_tasks_even_when_they_register_after_it() {
    let _alone = one_at_a_time();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..100 {
        let supervisor = TaskSupervisor::new();
        let follow_ups = Arc::new(AtomicUsize::new(0));
        let report = runtime.block_on(async {
            for _ in 0..4 {
                let follow_ups = follow_ups.clone();
                supervisor
                    .spawn_with(|ctx| async move {
                        ctx.shutdown_started().await;
                        for _ in 0..200 {
                            if ctx.spawn_blocking(|| ()).is_err() {
                                break;
                            }
                            follow_ups.fetch_add(1, Ordering::SeqCst);
                            if ctx.is_cancelled() {
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
        runtime.block_on(supervisor.wait_idle());
        let total = report.completed() + report.cancelled() + report.aborted() + report.abandoned();
        assert_eq!(
            total,
            4 + follow_ups.load(Ordering::SeqCst),
            "round {round}: {report}"
        );
    }
}
