//! Spawning, handles, panics, failure reports and tracing spans.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use background_tasks::{TaskFailure, TaskSupervisor};
use tokio::sync::oneshot;
use tokio::time::sleep;

#[tokio::test(start_paused = true)]
async fn a_task_outlives_the_code_that_spawned_it() {
    let supervisor = TaskSupervisor::new();
    let done = Arc::new(AtomicBool::new(false));
    // A handler-like scope that returns long before its task ends.
    async fn handler(supervisor: &TaskSupervisor, done: Arc<AtomicBool>) {
        let _ = supervisor.spawn(async move {
            sleep(Duration::from_secs(1)).await;
            done.store(true, Ordering::SeqCst);
        });
    }
    handler(&supervisor, done.clone()).await;
    assert!(!done.load(Ordering::SeqCst));
    assert_eq!(supervisor.len(), 1);
    supervisor.wait_idle().await;
    assert!(done.load(Ordering::SeqCst));
    assert!(supervisor.is_empty());
    assert!(!supervisor.is_shutting_down(), "wait_idle does not close");
    supervisor.spawn(async {}).unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_idle_counts_tasks_spawned_while_it_waits() {
    let supervisor = TaskSupervisor::new();
    supervisor
        .spawn_with(|ctx| async move {
            sleep(Duration::from_millis(100)).await;
            ctx.spawn(sleep(Duration::from_millis(500))).unwrap();
        })
        .unwrap();
    let start = tokio::time::Instant::now();
    supervisor.wait_idle().await;
    assert_eq!(start.elapsed(), Duration::from_millis(600));
}

#[tokio::test(start_paused = true)]
async fn handles_give_the_output_and_detach_when_dropped() {
    let supervisor = TaskSupervisor::new();
    let handle = supervisor.task("answer").spawn(async { 42 }).unwrap();
    assert_eq!(handle.await.unwrap(), 42);

    let (tx, rx) = oneshot::channel();
    drop(
        supervisor
            .spawn(async move {
                sleep(Duration::from_millis(10)).await;
                tx.send(()).unwrap();
            })
            .unwrap(),
    );
    rx.await.expect("a detached task runs to its end");
}

#[tokio::test(start_paused = true)]
async fn aborting_a_handle_stops_the_task_and_frees_its_place() {
    let supervisor = TaskSupervisor::builder().max_tasks(1).build();
    let handle = supervisor.spawn(std::future::pending::<()>()).unwrap();
    tokio::task::yield_now().await;
    handle.abort();
    let error = handle.await.unwrap_err();
    assert!(error.is_cancelled() && !error.is_panic());
    assert!(supervisor.is_empty());
    supervisor.spawn(async {}).unwrap();
}

#[tokio::test(start_paused = true)]
async fn context_knows_the_task_and_the_shutdown() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_millis(100))
        .build();
    let handle = supervisor
        .task("ctx")
        .spawn_with(|ctx| async move {
            let seen = (
                ctx.id(),
                ctx.name().map(str::to_owned),
                ctx.is_shutting_down(),
            );
            ctx.shutdown_started().await;
            assert!(ctx.is_shutting_down() && !ctx.is_cancelled());
            let token = ctx.cancellation_token();
            token.cancelled().await;
            assert!(ctx.is_cancelled());
            seen
        })
        .unwrap();
    let id = handle.id();
    tokio::task::yield_now().await;
    supervisor.shutdown().await;
    assert_eq!(handle.await.unwrap(), (id, Some("ctx".to_owned()), false));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_is_caught_reported_and_harmless() {
    let failures: Arc<Mutex<Vec<TaskFailure>>> = Arc::default();
    let supervisor = TaskSupervisor::builder()
        .on_failure({
            let failures = failures.clone();
            move |failure| failures.lock().unwrap().push(failure.clone())
        })
        .build();
    let logs = capture_logs();
    let handle = supervisor
        .task("resize-image")
        .spawn(async {
            sleep(Duration::from_millis(10)).await;
            panic!("image too large");
        })
        .unwrap();
    let id = handle.id();
    let error = handle.await.unwrap_err();
    assert!(error.is_panic());
    assert_eq!(error.panic_message(), Some("image too large"));

    let failure = {
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 1);
        failures[0].clone()
    };
    assert!(failure.is_panic() && !failure.is_aborted());
    assert_eq!(failure.task_id(), id);
    assert_eq!(failure.task_name(), Some("resize-image"));
    assert_eq!(failure.panic_message(), Some("image too large"));
    assert!(failure.to_string().contains("panicked: image too large"));

    let logs = logs.text();
    let line = logs
        .lines()
        .find(|line| line.contains("image too large"))
        .expect("the panic is logged");
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("resize-image"), "{line}");
    assert!(line.contains(&format!("task.id={id}")), "{line}");

    // The supervisor goes on as if nothing happened.
    assert!(supervisor.is_empty());
    assert_eq!(supervisor.spawn(async { 1 }).unwrap().await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_a_detached_blocking_task_is_reported_too() {
    let (tx, rx) = std::sync::mpsc::channel();
    let supervisor = TaskSupervisor::builder()
        .on_failure(move |failure| tx.send(failure.to_string()).unwrap())
        .build();
    drop(supervisor.spawn_blocking(|| panic!("disk full")).unwrap());
    supervisor.wait_idle().await;
    assert!(rx.recv().unwrap().ends_with("panicked: disk full"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_failure_callback_is_contained() {
    let supervisor = TaskSupervisor::builder()
        .on_failure(|_| panic!("the callback itself is broken"))
        .build();
    let error = supervisor
        .spawn(async { panic!("first") })
        .unwrap()
        .await
        .unwrap_err();
    assert_eq!(error.panic_message(), Some("first"));
    assert!(supervisor.is_empty());
}

#[tokio::test(start_paused = true)]
async fn aborted_tasks_reach_the_failure_callback() {
    let (tx, rx) = std::sync::mpsc::channel();
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::ZERO)
        .cancel_grace(Duration::ZERO)
        .on_failure(move |failure| tx.send(failure.clone()).unwrap())
        .build();
    supervisor
        .task("stuck")
        .spawn(std::future::pending::<()>())
        .unwrap();
    tokio::task::yield_now().await;
    supervisor.shutdown().await;
    let failure = rx.recv().unwrap();
    assert!(failure.is_aborted());
    assert_eq!(failure.task_name(), Some("stuck"));
}

#[tokio::test(start_paused = true)]
async fn each_task_runs_in_a_span_with_its_id_and_name_at_the_level_set() {
    let logs = capture_logs();
    let supervisor = TaskSupervisor::builder()
        .task_span_level(tracing::Level::INFO)
        .build();
    let named = supervisor
        .task("send-mail")
        .spawn(async {
            sleep(Duration::from_millis(1)).await;
            tracing::info!("sending");
        })
        .unwrap();
    let named_id = named.id();
    named.await.unwrap();
    let unnamed = supervisor
        .spawn(async { tracing::info!("anonymous task in the span test") })
        .unwrap();
    let unnamed_id = unnamed.id();
    unnamed.await.unwrap();
    let blocking = supervisor
        .task("checksum")
        .spawn_blocking(|| tracing::info!("hashing"))
        .unwrap();
    let blocking_id = blocking.id();
    blocking.await.unwrap();
    let tracked = supervisor
        .task("inline-step")
        .track_future(async { tracing::info!("tracked step") })
        .unwrap();
    let tracked_id = tracked.id();
    tracked.await;
    let local_id = tokio::task::LocalSet::new()
        .run_until(async {
            let local = supervisor
                .task("local-step")
                .spawn_local(async { tracing::info!("local step") })
                .unwrap();
            let id = local.id();
            local.await.unwrap();
            id
        })
        .await;

    let logs = logs.text();
    let line = |needle: &str| {
        logs.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {logs}"))
            .to_owned()
    };
    let sending = line("sending");
    assert!(sending.contains("background_task{"), "{sending}");
    assert!(
        sending.contains(&format!("task.id={named_id}")),
        "{sending}"
    );
    assert!(sending.contains("task.name=\"send-mail\""), "{sending}");
    assert!(line("anonymous task in the span test").contains(&format!("task.id={unnamed_id}")));
    let hashing = line("hashing");
    assert!(
        hashing.contains(&format!("task.id={blocking_id}")),
        "{hashing}"
    );
    assert!(hashing.contains("checksum"), "{hashing}");
    for (needle, id, name) in [
        ("tracked step", tracked_id, "inline-step"),
        ("local step", local_id, "local-step"),
    ] {
        let line = line(needle);
        assert!(line.contains(&format!("task.id={id}")), "{line}");
        assert!(line.contains(&format!("task.name=\"{name}\"")), "{line}");
    }
}

#[test]
fn spawning_outside_a_runtime_panics_with_a_message_that_says_so() {
    let supervisor = TaskSupervisor::new();
    for spawn in [
        (|s: &TaskSupervisor| drop(s.spawn(async {}))) as fn(&TaskSupervisor),
        |s| drop(s.task("x").spawn_with(|_| async {})),
        |s| drop(s.spawn_blocking(|| ())),
    ] {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| spawn(&supervisor)))
            .expect_err("spawning without a runtime panics");
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap();
        assert!(message.contains("outside of a Tokio runtime"), "{message}");
        assert!(supervisor.is_empty(), "the failed spawn is not counted");
    }
}

#[test]
fn every_public_type_is_send_sync_and_debug() {
    fn check<T: Send + Sync + std::fmt::Debug + 'static>() {}
    check::<TaskSupervisor>();
    check::<background_tasks::TaskContext>();
    check::<background_tasks::TaskHandle<()>>();
    check::<background_tasks::ShutdownReport>();
    check::<background_tasks::TaskFailure>();
    check::<background_tasks::SpawnError>();
    check::<background_tasks::TaskError>();
    check::<background_tasks::SupervisorBuilder>();
}

/// Every log line this test binary writes. Tests find their own lines by the unique names
/// and messages they use.
///
/// One global subscriber rather than one per test: tracing caches whether a callsite is
/// enabled, and a test without a subscriber hitting a callsite first, on another thread,
/// could hide the event from a test with a thread-local one.
/// The default span level is DEBUG: under the usual INFO filter a task's events carry no
/// span, which spares the subscriber's cost of a span per task (issue 9).
#[tokio::test(start_paused = true)]
async fn at_the_default_span_level_an_info_subscriber_makes_no_task_span() {
    let logs = capture_logs();
    let supervisor = TaskSupervisor::new();
    let handle = supervisor
        .task("quiet-span")
        .spawn(async {
            sleep(Duration::from_millis(1)).await;
            tracing::info!("logged from the default-level task");
        })
        .unwrap();
    handle.await.unwrap();
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|line| line.contains("logged from the default-level task"))
        .unwrap_or_else(|| panic!("the event is logged: {logs}"));
    assert!(!line.contains("background_task"), "{line}");
}

/// `LevelFilter::OFF` makes no span even for a subscriber that wants every level.
#[test]
fn a_task_span_level_of_off_makes_no_span_even_at_trace() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for (level, message) in [
                (
                    tracing::level_filters::LevelFilter::OFF,
                    "from a task without a span",
                ),
                (
                    tracing::level_filters::LevelFilter::TRACE,
                    "from a task in a trace span",
                ),
            ] {
                let supervisor = TaskSupervisor::builder().task_span_level(level).build();
                let handle = supervisor
                    .spawn(async move {
                        tokio::task::yield_now().await;
                        tracing::info!("{message}");
                    })
                    .unwrap();
                handle.await.unwrap();
            }
        });
    });
    let logs = logs.text();
    let line = |needle: &str| {
        logs.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {logs}"))
            .to_owned()
    };
    assert!(
        !line("from a task without a span").contains("background_task"),
        "{logs}"
    );
    assert!(
        line("from a task in a trace span").contains("background_task{"),
        "{logs}"
    );
}

fn capture_logs() -> Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
    .clone()
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .expect("no test panicked while logging")
            .clone();
        String::from_utf8(bytes).expect("logs are UTF-8")
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .expect("no test panicked while logging")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
