//! The actix example as a child process, driven over HTTP and stopped with real signals: the
//! same budgets and report line as the quickstart, with an actix-web server.

use std::time::{Duration, Instant};

use background_tasks_e2e::{Counts, Server, client, eventually, example_binary, shutdown_took};

/// Slack on top of the budgets for process exit, scheduling, debug builds and actix's
/// once-a-second check of its draining workers.
const MARGIN: Duration = Duration::from_millis(2500);

fn start(env: &[(&str, &str)]) -> Server {
    Server::start(&example_binary("example-actix"), env)
}

async fn post_job(client: &reqwest::Client, server: &Server, kind: &str, ms: u64) {
    server
        .post_job(client, &format!("duration_ms={ms}&kind={kind}"))
        .await;
}

/// Shutdown with jobs running on the supervisor's runtime, spawned from actix workers that
/// stop first: the process exits 0 within its budgets and the report accounts for each job
/// in the phase it ended in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_running_jobs_exits_within_the_budget_and_prints_the_report() {
    let shutdown_timeout = Duration::from_millis(2000);
    let cancel_grace = Duration::from_millis(500);
    let request_drain_timeout = Duration::from_millis(2000);
    let mut server = start(&[
        ("SHUTDOWN_TIMEOUT_MS", "2000"),
        ("CANCEL_GRACE_MS", "500"),
        ("REQUEST_DRAIN_TIMEOUT_MS", "2000"),
    ]);
    let client = client();
    // Ends during the drain: `completed` (the drain begins well before 1.5 s).
    post_job(&client, &server, "async", 1500).await;
    // Ends when cancelled: `cancelled`.
    post_job(&client, &server, "cooperative", 60_000).await;
    // A plain sleep ignores the cancellation: `aborted`.
    post_job(&client, &server, "async", 60_000).await;
    // A thread sleep cannot be stopped: `abandoned`, and the process exits without it.
    post_job(&client, &server, "blocking", 60_000).await;
    let tasks: serde_json::Value = client
        .get(server.url("/tasks"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(tasks["running"], 4, "{tasks}");

    let signalled = Instant::now();
    server.sigterm();
    let status = server.wait_exit(request_drain_timeout + shutdown_timeout + cancel_grace + MARGIN);
    let elapsed = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {elapsed:?} after SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        server.logs()
    );
    // The job that ignores every signal holds the drain to its timeout: the budget was used,
    // not skipped.
    assert!(elapsed >= shutdown_timeout, "{elapsed:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    // But not the grace: that job has no context, so it is aborted when the drain runs out,
    // and the cooperative job ends as soon as it is cancelled.
    let took = shutdown_took(&line);
    assert!(
        took >= shutdown_timeout - Duration::from_millis(100)
            && took < shutdown_timeout + cancel_grace,
        "the supervisor's shutdown took {took:?}: {line}"
    );
    assert_eq!(
        Counts::parse(&line),
        Counts {
            completed: 1,
            cancelled: 1,
            aborted: 1,
            abandoned: 1
        },
        "{line}"
    );
    assert!(
        line.contains("async-job") && line.contains("blocking-job"),
        "{line}"
    );
}

/// A second SIGTERM while the supervisor drains skips the rest of the budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_aborts_at_once() {
    let mut server = start(&[
        ("SHUTDOWN_TIMEOUT_MS", "60000"),
        ("CANCEL_GRACE_MS", "60000"),
    ]);
    let client = client();
    post_job(&client, &server, "async", 120_000).await;
    server.sigterm();
    // The workers have stopped and the supervisor drains.
    eventually("the supervisor's drain", Duration::from_secs(10), || {
        let logs = server.logs();
        async move {
            logs.contains("shutting down background tasks")
                .then_some(())
        }
    })
    .await;
    let forced = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(2));
    let elapsed = forced.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 2 s after the second SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status}; logs:\n{}",
        server.logs()
    );
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    assert_eq!(Counts::parse(&line).aborted, 1, "{line}");
}
