//! Once `serve` has returned, SIGINT and SIGTERM end the process again, as they would had it
//! never run, even though tokio's handlers stay installed for the life of the process: the
//! case that matters is a runtime whose drop waits for an abandoned blocking thread, where
//! Ctrl-C used to do nothing. Each test runs its own binary again as the process to signal.

#![cfg(unix)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use axum::Router;
use background_tasks::TaskSupervisor;
use background_tasks_axum::serve;
use tokio::net::TcpListener;

/// Set in the child process, to the signal it sends itself.
const CHILD_SIGNAL: &str = "BACKGROUND_TASKS_E2E_CHILD_SIGNAL";

/// How long the abandoned blocking task holds its thread: the runtime's drop waits this long.
const BLOCKING_FOR: Duration = Duration::from_secs(20);

#[test]
fn sigterm_ends_the_process_while_a_runtime_drop_waits_after_serve_returned() {
    run_or_check(
        "sigterm_ends_the_process_while_a_runtime_drop_waits_after_serve_returned",
        "TERM",
        15,
    );
}

#[test]
fn sigint_ends_the_process_while_a_runtime_drop_waits_after_serve_returned() {
    run_or_check(
        "sigint_ends_the_process_while_a_runtime_drop_waits_after_serve_returned",
        "INT",
        2,
    );
}

/// In the test process: runs `test` again in a child that signals itself, and checks that the
/// signal after `serve` returned ended it. In the child: does so.
fn run_or_check(test: &str, signal: &str, number: i32) {
    if let Some(signal) = std::env::var_os(CHILD_SIGNAL) {
        child(signal.to_str().expect("a signal name we set"));
    }
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_SIGNAL, signal)
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("serve returned: background tasks shut down"),
        "the first SIG{signal} should have stopped serve; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("runtime dropped"),
        "SIG{signal} after serve returned did nothing: the runtime's drop waited for its \
         blocking thread; stdout:\n{stdout}"
    );
    assert_eq!(
        output.status.signal(),
        Some(number),
        "the child should have died of SIG{signal}: {:?}; stdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
}

/// Serves until its own first `signal`, leaves a blocking task behind, and sends the same
/// signal again while the runtime's drop waits for that task.
fn child(signal: &str) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let supervisor = TaskSupervisor::builder()
            .shutdown_timeout(Duration::from_millis(100))
            .cancel_grace(Duration::from_millis(100))
            .build();
        supervisor
            .task("stuck-thread")
            .spawn_blocking(|| std::thread::sleep(BLOCKING_FOR))
            .expect("admitted");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        // `into_future` installs the handlers at once, on a runtime: the signal below finds
        // them.
        let serving = serve(listener, Router::new(), supervisor)
            .drain_delay(Duration::ZERO)
            .into_future();
        kill_self(signal);
        let report = serving.await.expect("serve stops on the signal");
        println!("serve returned: {report}");
    });
    // From another thread, once the drop below is waiting for the blocking task.
    std::thread::spawn({
        let signal = signal.to_owned();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            kill_self(&signal);
        }
    });
    drop(runtime);
    println!("runtime dropped");
    std::process::exit(0);
}

fn kill_self(signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
}
