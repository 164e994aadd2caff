//! Durable jobs end to end: the quickstart binary as real processes on one database, SQLite
//! and a real PostgreSQL server, killed with `kill -9`, stopped with SIGTERM, restarted, run
//! twice at once, and with the database server stopped under it.
//!
//! The PostgreSQL server is `TEST_POSTGRES_URL`'s or a throwaway cluster this binary starts
//! (see `background_tasks_e2e::postgres`); without either the PostgreSQL tests say so on the
//! terminal and skip. Every wait polls against a deadline sized for a loaded 2-core machine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use background_tasks_e2e::postgres::{self, Cluster};
use background_tasks_e2e::{Server, client};
use reqwest::StatusCode;

/// A database shared by the processes of one test.
struct Database {
    url: String,
    /// The temp directory of a SQLite file.
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn database(backend: Backend, test: &str) -> Option<Database> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temp dir");
            Some(Database {
                url: format!("sqlite://{}", dir.path().join("jobs.db").display()),
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let Some(server) = postgres::server() else {
                postgres::skip_loudly(test);
                return None;
            };
            Some(Database {
                url: server.database("e2e").await,
                _dir: None,
            })
        }
    }
}

fn quickstart(db: &Database, workers: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("DURABLE_WORKERS", workers),
        // Every durable job's end is logged, so that a test can tell which process ran it.
        ("RUST_LOG", "info,background_tasks_apalis=debug"),
    ];
    env.extend_from_slice(extra);
    Server::quickstart(&env)
}

/// `POST /durable-jobs?<query>`; the id of the 202.
async fn enqueue(client: &reqwest::Client, server: &Server, query: &str) -> String {
    let response = client
        .post(server.url(&format!("/durable-jobs?{query}")))
        .send()
        .await
        .expect("POST /durable-jobs is answered");
    assert_eq!(response.status(), StatusCode::ACCEPTED, "POST {query}");
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    body["id"].as_str().expect("a string id").to_owned()
}

/// `GET /durable-jobs/{id}`: its status and attempts.
async fn status(client: &reqwest::Client, server: &Server, id: &str) -> (String, u64) {
    let response = client
        .get(server.url(&format!("/durable-jobs/{id}")))
        .send()
        .await
        .expect("GET /durable-jobs/{id} is answered");
    assert_eq!(response.status(), StatusCode::OK, "GET {id}");
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(body["id"], id);
    (
        body["status"].as_str().expect("a status").to_owned(),
        body["attempts"].as_u64().expect("attempts"),
    )
}

async fn statuses(
    client: &reqwest::Client,
    server: &Server,
    ids: &[String],
) -> HashMap<String, (String, u64)> {
    let mut all = HashMap::new();
    for id in ids {
        all.insert(id.clone(), status(client, server, id).await);
    }
    all
}

/// Waits until every job in `ids` is `done`; their statuses then.
async fn all_done(
    client: &reqwest::Client,
    server: &Server,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, (String, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let all = statuses(client, server, ids).await;
        if all.values().all(|(state, _)| state == "done") {
            return all;
        }
        if Instant::now() > deadline {
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for (state, _) in all.values() {
                *counts.entry(state).or_default() += 1;
            }
            panic!(
                "not all done after {timeout:?}: {counts:?}; logs:\n{}",
                server.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn count(all: &HashMap<String, (String, u64)>, state: &str) -> usize {
    all.values().filter(|(s, _)| s == state).count()
}

/// `kill -9` with 50 jobs pending or running, then a restart on the same database: every job
/// ends `done`, and those done before the kill did not run again (their attempts stay 1).
async fn kill_9_then_restart_completes_every_job_and_reruns_none_that_had_completed(
    backend: Backend,
) {
    let Some(db) = database(backend, "kill_9_then_restart").await else {
        return;
    };
    let client = client();
    let mut first = quickstart(&db, "8", &[]);
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(enqueue(&client, &first, "duration_ms=400").await);
    }
    // Kill it once some jobs are done and others still wait or run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let all = statuses(&client, &first, &ids).await;
        if count(&all, "done") >= 8 {
            break all;
        }
        assert!(Instant::now() < deadline, "no progress: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    first.kill();
    let done_before: Vec<&String> = before
        .iter()
        .filter(|(_, (state, _))| state == "done")
        .map(|(id, _)| id)
        .collect();
    assert!(
        done_before.len() < 50,
        "every job was done before the kill: the test proves nothing"
    );

    let second = quickstart(&db, "8", &[]);
    let restarted = Instant::now();
    let after = all_done(&client, &second, &ids, Duration::from_secs(60)).await;
    for id in done_before {
        assert_eq!(
            after[id].1, 1,
            "job {id}, done before the kill, ran again: {:?}",
            after[id]
        );
    }
    // The killed worker's jobs come back once it has been silent for 5 s (the quickstart's
    // orphan bound), found by the next 1 s heartbeat, in whole seconds: within 7 s, then about
    // 3 s of work for 8 workers. 20 s leaves room for a loaded machine, not for minutes.
    assert!(
        restarted.elapsed() < Duration::from_secs(20),
        "{:?}",
        restarted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_kill_9_then_restart_completes_every_job_and_reruns_none_that_had_completed() {
    kill_9_then_restart_completes_every_job_and_reruns_none_that_had_completed(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_kill_9_then_restart_completes_every_job_and_reruns_none_that_had_completed() {
    kill_9_then_restart_completes_every_job_and_reruns_none_that_had_completed(Backend::Postgres)
        .await;
}

/// SIGTERM with jobs running longer than the budget, two that stop when cancelled and two that
/// ignore it and are aborted at the end of the budget: the process exits within the budget
/// plus 300 ms, all four are back in the queue at once (pending, no attempt used), and a
/// restart completes them.
async fn sigterm_returns_running_jobs_to_the_queue_at_once_and_a_restart_completes_them(
    backend: Backend,
) {
    let Some(db) = database(backend, "sigterm_returns_running_jobs").await else {
        return;
    };
    let client = client();
    let (shutdown_timeout, cancel_grace) = (1000, 500);
    let budget = Duration::from_millis(shutdown_timeout + cancel_grace);
    let mut server = quickstart(
        &db,
        "4",
        &[
            ("SHUTDOWN_TIMEOUT_MS", &shutdown_timeout.to_string()),
            ("CANCEL_GRACE_MS", &cancel_grace.to_string()),
        ],
    );
    let mut ids = Vec::new();
    for kind in ["async", "async", "uncooperative", "uncooperative"] {
        ids.push(enqueue(&client, &server, &format!("duration_ms=4000&kind={kind}")).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&statuses(&client, &server, &ids).await, "running") < 4 {
        assert!(Instant::now() < deadline, "the jobs did not all start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let signalled = Instant::now();
    server.sigterm();
    let exited = server.wait_exit(budget + Duration::from_secs(10));
    let took = signalled.elapsed();
    let exited = exited.unwrap_or_else(|| panic!("still running; logs:\n{}", server.logs()));
    assert!(exited.success(), "{exited:?}; logs:\n{}", server.logs());
    assert!(
        took <= budget + Duration::from_millis(300),
        "exited {took:?} after SIGTERM, budget {budget:?}"
    );
    let line = server.line_starting_with("shutdown report: ", Duration::from_secs(1));
    assert!(
        line.contains("4 durable jobs returned to the queue"),
        "{line}"
    );
    // The two that ignored the cancellation were aborted, and named among the returned.
    assert!(line.contains(", 2 aborted, "), "{line}");
    for id in &ids {
        assert!(
            line.contains(&format!("quickstart-job {id}")),
            "{id}: {line}"
        );
    }

    // Read at once by a process that runs no jobs: all pending, no attempt used.
    let reader = quickstart(&db, "0", &[]);
    for (id, state) in statuses(&client, &reader, &ids).await {
        assert_eq!(state, ("pending".to_owned(), 0), "job {id}");
    }
    drop(reader);
    let again = quickstart(&db, "4", &[]);
    for (id, (_, attempts)) in all_done(&client, &again, &ids, Duration::from_secs(30)).await {
        assert_eq!(attempts, 1, "job {id}: the interrupted run used no attempt");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigterm_returns_running_jobs_to_the_queue_at_once_and_a_restart_completes_them() {
    sigterm_returns_running_jobs_to_the_queue_at_once_and_a_restart_completes_them(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sigterm_returns_running_jobs_to_the_queue_at_once_and_a_restart_completes_them() {
    sigterm_returns_running_jobs_to_the_queue_at_once_and_a_restart_completes_them(
        Backend::Postgres,
    )
    .await;
}

/// Two quickstart processes on one PostgreSQL database, 200 jobs enqueued through both: every
/// job is done with `attempts == 1`, and both processes ran some.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_database_run_200_jobs_each_once() {
    let Some(db) = database(Backend::Postgres, "two_processes").await else {
        return;
    };
    let client = client();
    let a = quickstart(&db, "4", &[]);
    let b = quickstart(&db, "4", &[]);
    let mut ids = Vec::new();
    for n in 0..200 {
        let server = if n % 2 == 0 { &a } else { &b };
        ids.push(enqueue(&client, server, "duration_ms=20").await);
    }
    for (id, (_, attempts)) in all_done(&client, &a, &ids, Duration::from_secs(90)).await {
        assert_eq!(attempts, 1, "job {id}");
    }
    let ran = |server: &Server| server.logs().matches("durable job done").count();
    let (ran_a, ran_b) = (ran(&a), ran(&b));
    assert_eq!(ran_a + ran_b, 200, "each job ran once: {ran_a} + {ran_b}");
    assert!(ran_a > 0 && ran_b > 0, "both ran jobs: {ran_a} and {ran_b}");
}

/// `fail` is `dead` after its attempts, `flaky` is `done` on its second attempt, and a second
/// enqueue with the same key returns the first job's id.
async fn fail_is_dead_flaky_is_done_on_its_second_attempt_and_a_key_dedupes(backend: Backend) {
    let Some(db) = database(backend, "fail_flaky_key").await else {
        return;
    };
    let client = client();
    let server = quickstart(&db, "4", &[("DURABLE_MAX_ATTEMPTS", "3")]);
    let fail = enqueue(&client, &server, "kind=fail&duration_ms=10").await;
    let flaky = enqueue(&client, &server, "kind=flaky&duration_ms=10").await;
    let keyed = enqueue(&client, &server, "duration_ms=10&key=order-7").await;
    assert_eq!(
        enqueue(&client, &server, "duration_ms=10&key=order-7").await,
        keyed
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fail = status(&client, &server, &fail).await;
        let flaky = status(&client, &server, &flaky).await;
        if fail.0 == "dead" && flaky.0 == "done" {
            assert_eq!(fail.1, 3, "fail used its 3 attempts");
            assert_eq!(flaky.1, 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fail {fail:?}, flaky {flaky:?}; logs:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&client, &server, &keyed).await, ("done".into(), 1));
    assert_eq!(
        enqueue(&client, &server, "duration_ms=10&key=order-7").await,
        keyed,
        "the key still names the first job once it is done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fail_is_dead_flaky_is_done_on_its_second_attempt_and_a_key_dedupes() {
    fail_is_dead_flaky_is_done_on_its_second_attempt_and_a_key_dedupes(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fail_is_dead_flaky_is_done_on_its_second_attempt_and_a_key_dedupes() {
    fail_is_dead_flaky_is_done_on_its_second_attempt_and_a_key_dedupes(Backend::Postgres).await;
}

/// The PostgreSQL server stopped for a few seconds while jobs run: enqueues meanwhile answer
/// 503 with `Retry-After` within 5 s, the process keeps running, and every job accepted before
/// reaches `done` once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_seconds_gets_503s_meanwhile_and_every_accepted_job_done() {
    let Some(cluster) = Cluster::start() else {
        postgres::skip_loudly("postgres_stopped_for_seconds");
        return;
    };
    let cluster = Arc::new(cluster);
    let db = Database {
        url: cluster.server().database("e2e_outage").await,
        _dir: None,
    };
    let client = client();
    let mut server = quickstart(&db, "4", &[]);
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(enqueue(&client, &server, "duration_ms=1500").await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&statuses(&client, &server, &ids).await, "running") == 0 {
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stop = cluster.clone();
    tokio::task::spawn_blocking(move || stop.stop())
        .await
        .expect("pg_ctl stop");
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(3) {
        let asked = Instant::now();
        let response = client
            .post(server.url("/durable-jobs?duration_ms=10"))
            .send()
            .await
            .expect("answered while the database is down");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "answered after {:?}",
            asked.elapsed()
        );
    }
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the process exited while the database was down; logs:\n{}",
        server.logs()
    );
    let start = cluster.clone();
    tokio::task::spawn_blocking(move || start.start_server())
        .await
        .expect("pg_ctl start");

    let after = all_done(&client, &server, &ids, Duration::from_secs(60)).await;
    assert_eq!(after.len(), 12);
    // Accepted again once the server is back.
    let later = enqueue(&client, &server, "duration_ms=10").await;
    all_done(&client, &server, &[later], Duration::from_secs(30)).await;
}

/// A `DATABASE_URL` that cannot be used: the quickstart exits with code 2 at once, with a
/// message that names the variable and says what is expected.
#[test]
fn an_unusable_database_url_exits_2_with_what_is_expected() {
    let binary = background_tasks_e2e::quickstart_binary();
    let dir = tempfile::tempdir().expect("a temp dir");
    let missing_dir = format!("sqlite://{}/no/such/dir/jobs.db", dir.path().display());
    for (url, says) in [
        // Another scheme.
        ("mysql://root@127.0.0.1/jobs", "expected sqlite://<file>"),
        // Malformed: no port number.
        (
            "postgres://postgres@127.0.0.1:port/jobs",
            "or postgres://<user>:<password>@<host>:<port>/<database>",
        ),
        // Unreachable: nothing listens on port 1.
        (
            "postgres://postgres:secret@127.0.0.1:1/jobs",
            "cannot open the job database postgres://postgres:***@127.0.0.1:1/jobs",
        ),
        // A file that cannot be created.
        (missing_dir.as_str(), "cannot open the job database"),
    ] {
        let began = Instant::now();
        let mut child = std::process::Command::new(&binary)
            .env("PORT", "0")
            .env("DATABASE_URL", url)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the quickstart starts");
        // The database timeout is 3 s; a process still running after 15 s is stuck.
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if began.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("DATABASE_URL={url}: still running after 15 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("piped stderr"), &mut stderr)
            .expect("stderr");
        assert_eq!(status.code(), Some(2), "DATABASE_URL={url}: {stderr}");
        assert!(
            stderr.contains("error: DATABASE_URL: ") && stderr.contains(says),
            "DATABASE_URL={url}: {stderr}"
        );
        assert!(
            !stderr.contains("secret"),
            "the password is shown: {stderr}"
        );
        // Nothing ran: no task is left for the exit to drop and warn about.
        assert!(!stderr.contains("WARN"), "DATABASE_URL={url}: {stderr}");
    }
}

/// Without `DATABASE_URL`, durable jobs go to `quickstart.db` in the working directory,
/// created if missing, with 4 workers and 3 attempts.
#[test]
fn without_database_url_jobs_go_to_quickstart_db_in_the_working_directory() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().expect("a temp dir");
    let mut child = std::process::Command::new(background_tasks_e2e::quickstart_binary())
        .current_dir(dir.path())
        .env("PORT", "0")
        .env_remove("DATABASE_URL")
        .env_remove("DURABLE_WORKERS")
        .env_remove("DURABLE_MAX_ATTEMPTS")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the quickstart starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, line) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for text in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(text);
        }
    });
    let listening = line.recv_timeout(Duration::from_secs(15));
    let _ = child.kill();
    let _ = child.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped stderr"), &mut stderr)
        .expect("stderr");
    let listening = listening.unwrap_or_else(|_| panic!("no address line; logs:\n{stderr}"));
    assert!(listening.starts_with("listening on "), "{listening}");
    assert!(
        dir.path().join("quickstart.db").is_file(),
        "no quickstart.db in the working directory; logs:\n{stderr}"
    );
    let ready = stderr
        .lines()
        .find(|line| line.contains("durable jobs ready"))
        .unwrap_or_else(|| panic!("no 'durable jobs ready' line:\n{stderr}"));
    for field in ["url=sqlite://quickstart.db", "workers=4", "max_attempts=3"] {
        assert!(ready.contains(field), "{field}: {ready}");
    }
}
