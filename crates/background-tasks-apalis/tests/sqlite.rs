//! The crate's behaviours on SQLite, each against a fresh database file in a temp directory,
//! and what only SQLite does.

mod common;

use std::time::{Duration, Instant};

use background_tasks_apalis::{
    ConnectError, DurableJobError, DurableJobs, EnqueueOptions, JobState,
};
use common::{Db, sleep};

async fn db(_test: &str) -> Option<Db> {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    Some(Db {
        url,
        _dir: Some(dir),
    })
}

behaviours!(db);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_that_cannot_get_the_database_fails_as_unavailable_within_its_timeout() {
    let db = db("").await.expect("a SQLite file");
    let jobs = DurableJobs::builder(&db.url)
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    // Another process holds the write lock.
    let blocker = DurableJobs::connect(&db.url).await.unwrap();
    drop(blocker);
    let mut lock = sqlx_connection(&db.url).await;
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let began = Instant::now();
    let error = jobs.enqueue(sleep(1)).await.unwrap_err();
    assert!(matches!(error, DurableJobError::Unavailable(_)), "{error}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(error.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

async fn sqlx_connection(url: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(url)
        .await
        .expect("a second connection")
}

#[tokio::test]
async fn a_url_of_another_scheme_is_refused_with_what_is_expected() {
    let error = DurableJobs::connect("mysql://app:s3cret@localhost/jobs")
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("expected sqlite://"), "{message}");
    assert!(
        message.contains("mysql://app:***@localhost/jobs"),
        "{message}"
    );
}

#[tokio::test]
async fn a_url_that_does_not_parse_is_refused_with_what_is_expected() {
    let error = DurableJobs::connect("sqlite://jobs.db?mode=sideways")
        .await
        .unwrap_err();
    assert!(
        matches!(error, ConnectError::InvalidUrl { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("expected sqlite://<file>"),
        "{error}"
    );
}

/// A fetch under way when shutdown begins: what it brings back does not run, and goes back to
/// the queue at once instead of staying locked by this worker until the orphan bound. The
/// fetch is held up by another connection's write lock (SQLite's busy wait), which is let go
/// only once shutdown has begun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_a_fetch_brings_back_after_shutdown_began_are_not_run_and_not_left_locked() {
    let db = db("").await.expect("a SQLite file");
    let setup = common::start(&db, common::LONG, 4).await;
    // Stored now, due in an hour: no fetch takes it until the lock holder makes it due.
    let id = setup
        .jobs
        .enqueue_with(
            sleep(1),
            EnqueueOptions::new().delay(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let mut lock = sqlx_connection(&db.url).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut lock)
        .await
        .unwrap();
    sqlx::query("UPDATE Jobs SET run_at = 0 WHERE id = ?1")
        .bind(id.to_string())
        .execute(&mut lock)
        .await
        .unwrap();
    // The idle fetchers poll every 100 ms: by now one waits for the lock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let shutdown = tokio::spawn({
        let supervisor = setup.supervisor.clone();
        async move { supervisor.shutdown().await }
    });
    while !setup.supervisor.is_shutting_down() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sqlx::query("COMMIT").execute(&mut lock).await.unwrap();
    let report = setup.workers.finish(shutdown.await.unwrap()).await;
    assert!(report.returned().is_empty(), "{report}");
    assert_eq!(
        setup.probe.started(),
        0,
        "fetched after shutdown began, and run"
    );
    let status = common::status(&setup.jobs, &id).await;
    assert_eq!(
        (status.state(), status.attempts()),
        (JobState::Pending, 0),
        "{status:?}"
    );
}
