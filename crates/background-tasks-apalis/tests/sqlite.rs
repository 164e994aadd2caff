//! The crate's behaviours on SQLite, each against a fresh database file in a temp directory,
//! and what only SQLite does.

mod common;

use std::time::{Duration, Instant};

use background_tasks_apalis::{DurableJobError, DurableJobs};
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
    let error = DurableJobs::connect("mysql://localhost/jobs")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("expected sqlite://"), "{error}");
}
