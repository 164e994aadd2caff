//! The quickstart binary as a child process, driven over HTTP and stopped with real signals.
//!
//! The binary is built on first use by `background_tasks_e2e::quickstart_binary` (see the
//! crate docs of `tests/src/lib.rs` for how), so `cargo test --workspace` works from a clean
//! clone. Budgets are small and bounds generous, for a loaded 2-core machine; every wait polls
//! against a deadline.
//!
//! The quickstart runs one startup task, the heartbeat, which ends when shutdown starts: every
//! report below therefore counts one more `completed` task than the jobs.

use std::time::{Duration, Instant};

use background_tasks_e2e::{Counts, Server, client, eventually, shutdown_took};
use reqwest::StatusCode;

/// Slack on top of the budgets for process exit, scheduling and debug builds.
const MARGIN: Duration = Duration::from_millis(1500);

async fn post_job(client: &reqwest::Client, server: &Server, kind: &str, ms: u64) -> u64 {
    server
        .post_job(client, &format!("duration_ms={ms}&kind={kind}"))
        .await
}

async fn get_json(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().await.expect("a JSON body")
}

/// Shutdown with jobs of every kind in flight, and more accepted during the drain delay: the
/// process exits 0 within its budgets, `/ready` answers 503 while the listener still accepts,
/// and the report accounts for every accepted job, each in the phase it ended in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_kind_of_job_within_the_budget_and_reports_each_one() {
    let drain_delay = Duration::from_millis(1500);
    let shutdown_timeout = Duration::from_millis(4000);
    let cancel_grace = Duration::from_millis(500);
    let mut server = Server::quickstart(&[
        ("DRAIN_DELAY_MS", "1500"),
        ("SHUTDOWN_TIMEOUT_MS", "4000"),
        ("CANCEL_GRACE_MS", "500"),
    ]);
    let client = client();

    // Short jobs end during the drain, after the drain delay (so they are in the report) and
    // well before the drain timeout: `completed`. Two seconds of margin on each side: on a
    // loaded machine, posting the jobs and checking the server before the signal took over
    // one second, and a short job of 2.5 s ended before the drain began.
    let short = 3500;
    let mut accepted = 0;
    for kind in ["async", "blocking", "panic"] {
        post_job(&client, &server, kind, short).await;
        accepted += 1;
    }
    // Ends when cancelled: `cancelled`.
    post_job(&client, &server, "cooperative", 60_000).await;
    // A plain sleep ignores the cancellation: `aborted`.
    post_job(&client, &server, "async", 60_000).await;
    // A thread sleep cannot be stopped: `abandoned`, and the process must exit without it.
    post_job(&client, &server, "blocking", 60_000).await;
    accepted += 3;
    let tasks = get_json(&client, &server.url("/tasks")).await;
    assert_eq!(
        tasks["running"], accepted,
        "all jobs still run before the signal: {tasks}"
    );
    assert_eq!(tasks["shutting_down"], false);
    assert_eq!(
        client
            .get(server.url("/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let signalled = Instant::now();
    server.sigterm();

    // During the drain delay the listener still accepts: readiness says 503 ...
    let ready = eventually("/ready to answer 503", drain_delay, || async {
        let response = client.get(server.url("/ready")).send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    assert!(
        ready.headers().contains_key("retry-after"),
        "{:?}",
        ready.headers()
    );
    assert!(
        signalled.elapsed() < drain_delay,
        "the drain delay was cut short"
    );
    let tasks = get_json(&client, &server.url("/tasks")).await;
    assert_eq!(tasks["shutting_down"], true, "{tasks}");
    // ... and a job posted now is still accepted (the supervisor is open until the requests
    // have drained), and it is awaited like the others.
    post_job(&client, &server, "async", 2500).await;
    accepted += 1;

    let status = server.wait_exit(drain_delay + shutdown_timeout + cancel_grace + MARGIN);
    let elapsed = signalled.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {elapsed:?} after SIGTERM, past the budgets; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    // The job that ignores every signal holds the shutdown for its whole drain, and not less.
    assert!(
        elapsed >= drain_delay + shutdown_timeout - Duration::from_millis(100),
        "exited after {elapsed:?}, before the budgets ran out"
    );

    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    // But not for the grace: it has no context, so it cannot see the cancellation signal, and
    // is aborted when the drain runs out; the cooperative job ends as soon as it is cancelled.
    let took = shutdown_took(&line);
    assert!(
        took >= shutdown_timeout - Duration::from_millis(100)
            && took < shutdown_timeout + cancel_grace,
        "the supervisor's shutdown took {took:?}: {line}"
    );
    let counts = Counts::parse(&line);
    let heartbeat = 1;
    assert_eq!(
        counts,
        Counts {
            completed: 4 + heartbeat,
            cancelled: 1,
            aborted: 1,
            abandoned: 1,
        },
        "{line}"
    );
    assert_eq!(
        counts.total(),
        accepted + heartbeat,
        "an accepted job was lost: {line}"
    );
    assert!(
        line.contains("blocking-job"),
        "the abandoned job is named: {line}"
    );
}

/// A second SIGTERM during the drain delay skips the rest of the budgets and aborts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_during_the_drain_delay_aborts_at_once() {
    let mut server = Server::quickstart(&[
        ("DRAIN_DELAY_MS", "30000"),
        ("SHUTDOWN_TIMEOUT_MS", "30000"),
        ("CANCEL_GRACE_MS", "30000"),
    ]);
    let client = client();
    post_job(&client, &server, "async", 60_000).await;
    post_job(&client, &server, "async", 60_000).await;

    server.sigterm();
    eventually("/ready to answer 503", Duration::from_secs(5), || async {
        let response = client.get(server.url("/ready")).send().await.ok()?;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
    })
    .await;
    let forced = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(1));
    let elapsed = forced.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 1 s after the second SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "exited {elapsed:?} after the second SIGTERM"
    );

    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    let counts = Counts::parse(&line);
    // Both jobs are aborted, by name. The supervisor's drain had not begun, so the forced
    // shutdown runs through its phases within microseconds: the heartbeat, which ends itself on
    // `shutdown_started`, is completed, cancelled (it ended in the instant between the
    // cancellation signal and the abort: seen once in a dozen runs) or aborted, and only it.
    assert_eq!(line.matches("async-job (task").count(), 2, "{line}");
    assert!(counts.aborted >= 2, "{line}");
    assert!(counts.cancelled <= 1, "{line}");
    assert_eq!(counts.abandoned, 0, "{line}");
    assert_eq!(counts.total(), 2 + 1, "{line}");
}

/// A second SIGTERM once the listener has closed and the supervisor is draining its tasks
/// aborts them at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_while_tasks_drain_aborts_at_once() {
    let mut server = Server::quickstart(&[
        ("SHUTDOWN_TIMEOUT_MS", "30000"),
        ("CANCEL_GRACE_MS", "30000"),
    ]);
    let client = client();
    post_job(&client, &server, "async", 60_000).await;
    post_job(&client, &server, "cooperative", 60_000).await;

    server.sigterm();
    // No drain delay and no open connection: once the listener refuses connections, the
    // supervisor's drain is under way.
    eventually("the listener to close", Duration::from_secs(5), || async {
        client
            .get(server.url("/ready"))
            .send()
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let forced = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(1));
    let elapsed = forced.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running 1 s after the second SIGTERM; logs:\n{}",
            server.logs()
        )
    });
    assert!(
        status.success(),
        "exit status {status:?}; logs:\n{}",
        server.logs()
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "exited {elapsed:?} after the second SIGTERM"
    );

    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    let counts = Counts::parse(&line);
    // The heartbeat ended when the drain began; the cooperative job may see the cancellation
    // before the abort reaches it, so it is cancelled or aborted.
    assert_eq!(counts.completed, 1, "{line}");
    assert!(counts.aborted >= 1, "{line}");
    assert_eq!(counts.cancelled + counts.aborted, 2, "{line}");
    assert_eq!(counts.abandoned, 0, "{line}");
}

/// Bad parameters get a 400 with a JSON error, and start nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_parameters_get_400_with_a_json_error() {
    let mut server = Server::quickstart(&[]);
    let client = client();
    for query in [
        "duration_ms=soon",
        "duration_ms=-1",
        "kind=sideways",
        "duration_ms=10&kind=ASYNC",
    ] {
        let response = client
            .post(server.url(&format!("/jobs?{query}")))
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: serde_json::Value = response.json().await.expect("a JSON error");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{query}: {body}"
        );
    }
    let tasks = get_json(&client, &server.url("/tasks")).await;
    assert_eq!(tasks["running"], 0, "{tasks}");

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "exit status {status:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    assert_eq!(
        Counts::parse(&line).total(),
        1,
        "only the heartbeat: {line}"
    );
}

/// With `MAX_TASKS` jobs running, the next job gets 503 with `Retry-After`; a slot that frees
/// up admits jobs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_past_max_tasks_get_503_with_retry_after() {
    let mut server = Server::quickstart(&[("MAX_TASKS", "2"), ("SHUTDOWN_TIMEOUT_MS", "300")]);
    let client = client();
    post_job(&client, &server, "cooperative", 60_000).await;
    post_job(&client, &server, "async", 300).await;

    let response = client
        .post(server.url("/jobs?duration_ms=10"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header");
    assert!(
        retry_after.to_str().unwrap().parse::<u64>().is_ok(),
        "Retry-After is in seconds: {retry_after:?}"
    );
    let tasks = get_json(&client, &server.url("/tasks")).await;
    assert_eq!(tasks["running"], 2, "{tasks}");

    // The short job ends, and its slot takes a new job.
    eventually("a free slot", Duration::from_secs(5), || async {
        let response = client.post(server.url("/jobs?duration_ms=60000&kind=cooperative"));
        let response = response.send().await.ok()?;
        (response.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;

    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "exit status {status:?}");
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    let counts = Counts::parse(&line);
    assert_eq!(counts.cancelled, 2, "{line}");
    assert_eq!(counts.total(), 2 + 1, "{line}");
}

/// The `listening on` line is the signal that the server is up, so a SIGTERM sent right after
/// it must already start the graceful shutdown: exit 0 with a report, never death by the
/// signal's default action. The window, if any, is short, hence the repetitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_right_after_the_listening_line_shuts_down_gracefully() {
    for attempt in 1..=30 {
        let mut server = Server::quickstart(&[]);
        server.sigterm();
        let status = server.wait_exit(Duration::from_secs(5)).expect("exits");
        assert!(
            status.success(),
            "attempt {attempt}: SIGTERM right after `listening on` ended the process with \
             {status:?} instead of a graceful shutdown; logs:\n{}",
            server.logs()
        );
        server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    }
}
