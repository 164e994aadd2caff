//! The crate's behaviours on a real PostgreSQL server, each against a fresh database, and
//! what only PostgreSQL does: enqueueing in the caller's transaction, a server that goes away
//! and comes back, several workers sharing one database.
//!
//! The server is `TEST_POSTGRES_URL`'s, or a throwaway cluster this test binary starts from
//! the PostgreSQL 15 binaries (see `background_tasks_e2e::postgres`). Without either, each
//! test says so on the terminal and skips.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use background_tasks_apalis::{DurableJobError, DurableJobs, EnqueueOptions, JobId, JobState};
use background_tasks_e2e::postgres::{self, Cluster};
use common::{Db, LONG, final_status, sleep, start, wait_for};
use sqlx::Connection;

async fn db(test: &str) -> Option<Db> {
    let Some(server) = postgres::server() else {
        postgres::skip_loudly(test);
        return None;
    };
    Some(Db {
        url: server.database("bta").await,
        _dir: None,
    })
}

behaviours!(db);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_the_callers_transaction_is_stored_exactly_when_it_commits() {
    let Some(db) = db("enqueue_in").await else {
        return;
    };
    let setup = start(&db, LONG, 2).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE orders (id BIGSERIAL PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();

    // Rolled back: neither the order nor its job exists.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO orders DEFAULT VALUES")
        .execute(&mut *tx)
        .await
        .unwrap();
    let dropped = setup
        .jobs
        .enqueue_in(&mut tx, sleep(1), EnqueueOptions::new())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(setup.jobs.status(&dropped).await.unwrap().is_none());

    // Not visible to the workers before the commit, done after it.
    let mut tx = conn.begin().await.unwrap();
    let kept = setup
        .jobs
        .enqueue_in(
            &mut tx,
            sleep(1),
            EnqueueOptions::new().idempotency_key("order-1"),
        )
        .await
        .unwrap();
    // The same key again in the same transaction: the first id, and the transaction (whose
    // insert hit the unique index) is still usable.
    let again = setup
        .jobs
        .enqueue_in(
            &mut tx,
            sleep(1),
            EnqueueOptions::new().idempotency_key("order-1"),
        )
        .await
        .unwrap();
    assert_eq!(again, kept);
    sqlx::query("INSERT INTO orders DEFAULT VALUES")
        .execute(&mut *tx)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(setup.jobs.status(&kept).await.unwrap().is_none());
    tx.commit().await.unwrap();
    let done = final_status(&setup.jobs, &kept, LONG).await;
    assert_eq!((done.state(), done.attempts()), (JobState::Done, 1));
    assert_eq!(setup.probe.started(), 1);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    let _ = setup
        .workers
        .finish(setup.supervisor.shutdown().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_in_refuses_jobs_stored_in_sqlite() {
    let Some(db) = db("enqueue_in_refuses_sqlite").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = DurableJobs::connect(&format!("sqlite://{}/j.db", dir.path().display()))
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let error = sqlite
        .enqueue_in(&mut conn, sleep(1), EnqueueOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(error, DurableJobError::NotPostgres), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sets_of_workers_on_one_database_run_every_job_once() {
    let Some(db) = db("two_workers").await else {
        return;
    };
    let first = start(&db, LONG, 4).await;
    let second = start(&db, LONG, 4).await;
    let mut ids = Vec::new();
    for n in 0..100 {
        let jobs = if n % 2 == 0 {
            &first.jobs
        } else {
            &second.jobs
        };
        ids.push(jobs.enqueue(sleep(20)).await.unwrap());
    }
    for id in &ids {
        let status = final_status(&first.jobs, id, LONG).await;
        assert_eq!((status.state(), status.attempts()), (JobState::Done, 1));
    }
    assert_eq!(first.probe.started() + second.probe.started(), 100);
    assert!(
        first.probe.started() > 0 && second.probe.started() > 0,
        "both took jobs: {} and {}",
        first.probe.started(),
        second.probe.started()
    );
}

/// The server stopped while a job runs: enqueues fail as unavailable within the timeout, the
/// workers keep running, and once the server is back the job's outcome is recorded and new
/// jobs run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_answers_unavailable_and_nothing_accepted_is_lost() {
    let Some(cluster) = Cluster::start() else {
        postgres::skip_loudly("a_server_that_goes_away");
        return;
    };
    let cluster = Arc::new(cluster);
    let url = cluster.server().database("bta_outage").await;
    let db = Db { url, _dir: None };
    let setup = start(&db, LONG, 4).await;
    let running = setup.jobs.enqueue(sleep(3_000)).await.unwrap();
    wait_for(&setup.jobs, &running, LONG, |s| {
        s.state() == JobState::Running
    })
    .await;

    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.stop()
    })
    .await
    .unwrap();
    let began = Instant::now();
    let error = setup.jobs.enqueue(sleep(1)).await.unwrap_err();
    assert!(matches!(error, DurableJobError::Unavailable(_)), "{error}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    // The job ends while the server is away; its outcome waits for it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || cluster.start_server()
    })
    .await
    .unwrap();

    let done = final_status(&setup.jobs, &running, LONG).await;
    assert_eq!(done.state(), JobState::Done, "{done:?}");
    let after: JobId = setup.jobs.enqueue(sleep(1)).await.unwrap();
    assert_eq!(
        final_status(&setup.jobs, &after, LONG).await.state(),
        JobState::Done
    );
    assert_eq!(setup.probe.started(), 2, "the running job ran once");
    let report = setup
        .workers
        .finish(setup.supervisor.shutdown().await)
        .await;
    assert!(report.is_clean(), "{report}");
}

#[tokio::test]
async fn an_unreachable_server_is_refused_at_connect_with_the_password_hidden() {
    // A loopback port with no server: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://app:s3cret@127.0.0.1:{port}/jobs");
    let began = Instant::now();
    let error = DurableJobs::builder(&url)
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    let message = error.to_string();
    assert!(
        message.contains("cannot open the job database"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

/// A server that hangs (SIGSTOP: its connections stay open and nothing answers, as behind a
/// dropped network link): an enqueue and a status read fail as unavailable within the
/// builder's timeout, not when TCP gives up minutes later; once it answers again, so do they.
/// What bounds them is the pool's test of a connection before use, which the timeout covers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hangs_answers_unavailable_within_the_timeout() {
    let Some(cluster) = Cluster::start() else {
        postgres::skip_loudly("a_server_that_hangs");
        return;
    };
    let url = cluster.server().database("bta_frozen").await;
    let timeout = Duration::from_secs(1);
    let jobs = DurableJobs::builder(&url)
        .timeout(timeout)
        .connect()
        .await
        .unwrap();
    let before = jobs.enqueue(sleep(1)).await.unwrap();

    let frozen = cluster.freeze();
    // A call still waiting after 10 s would wait for TCP's minutes: fail rather than hang (the
    // guard then lets the server go on, and the cluster is stopped as usual).
    let bounded = Duration::from_secs(10);
    let began = Instant::now();
    let error = tokio::time::timeout(bounded, jobs.enqueue(sleep(1)))
        .await
        .expect("the enqueue answers while the server hangs")
        .unwrap_err();
    assert!(matches!(error, DurableJobError::Unavailable(_)), "{error}");
    let error = tokio::time::timeout(bounded, jobs.status(&before))
        .await
        .expect("the status read answers while the server hangs")
        .unwrap_err();
    assert!(matches!(error, DurableJobError::Unavailable(_)), "{error}");
    // Two calls of 1 s each; 5 s leaves room for a loaded machine, not for TCP's minutes.
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "{:?}",
        began.elapsed()
    );
    drop(frozen);

    assert!(jobs.status(&before).await.unwrap().is_some());
    jobs.enqueue(sleep(1)).await.unwrap();
}

/// The depth query on PostgreSQL (the `metrics` feature, which the workspace build enables).
#[cfg(feature = "metrics")]
#[test]
fn postgres_the_pending_gauge_counts_the_jobs_waiting_in_the_database() {
    let Some(server) = postgres::server() else {
        postgres::skip_loudly("postgres_the_pending_gauge_counts_the_jobs_waiting_in_the_database");
        return;
    };
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(server.database("metrics"));
    common::the_pending_gauge_counts_the_jobs_waiting_in_the_database(&url);
}
