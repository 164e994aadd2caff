//! The SQLite backend: apalis-sqlite's schema and queries.

use std::str::FromStr;
use std::time::Duration;

use apalis_core::backend::{TaskResult, WorkerFilter};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use apalis_sqlite::queries;
use apalis_sqlite::{Config, SqliteStorage};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{Fetched, NewJob, Outcome, StoreResult, driver_error, error_json, last_error};
use crate::error::ConnectError;
use crate::id::JobId;
use crate::status::JobStatus;

/// What the `Workers` rows record as the storage.
const STORAGE_NAME: &str = "background-tasks-apalis/sqlite";

/// Turns on SQLite's query planner stability guarantee (`SQLITE_DBCONFIG_ENABLE_QPSG`) for a
/// new connection of the store's pool: the planner then plans a statement without looking at
/// the values bound to its parameters.
///
/// Without it, a statement whose plan used a bound value is expired by the next binding of that
/// parameter, whatever the value, and parsed and planned again at its next step. apalis's fetch
/// (`queries/backend/fetch_next.sql`, run on every poll of every worker) ends in `LIMIT ?3`,
/// which SQLite 3.51 folds into the program as a constant: every poll re-prepared the
/// statement, 70 % of an idle quickstart's instructions (docs/benchmarks.md, "The durable
/// fetcher's statement, prepared once"). With the guarantee, the limit is read when the
/// statement runs. No query of apalis's or of this crate relies on a plan made for a bound
/// value: their indexes are chosen by their columns and literals.
#[allow(unsafe_code)]
async fn plan_without_bound_values(conn: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    use std::ffi::c_int;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `lock_handle` gives this task the connection's handle alone until `handle` drops:
    // sqlx's worker thread makes no call on it meanwhile. The arguments are the documented
    // ones of SQLITE_DBCONFIG_ENABLE_QPSG (https://www.sqlite.org/c3ref/c_dbconfig_defensive.html):
    // an int, 1 to turn it on, and a pointer to an int for the setting it leaves, which may be
    // null.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db.as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as c_int,
            std::ptr::null_mut::<c_int>(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!(
                "SQLite refused SQLITE_DBCONFIG_ENABLE_QPSG (error code {rc}): the SQLite linked \
                 in is older than 3.20; link the bundled one (libsqlite3-sys's `bundled` \
                 feature, which sqlx's `sqlite` feature turns on)"
            )
            .into(),
        ))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) and migrates the database at `url`.
    pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<Self, ConnectError> {
        let unreachable = |source| ConnectError::Unreachable {
            url: super::redact(url),
            source,
        };
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| super::invalid_url(url, source))?
            .create_if_missing(true)
            // WAL lets readers (status reads) run beside the writer. NORMAL keeps every commit
            // across a process crash (apalis's own `setup` turns syncing OFF, which does not
            // survive an OS crash).
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(timeout);
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(timeout)
            .after_connect(|conn, _| Box::pin(plan_without_bound_values(conn)))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        SqliteStorage::migrations()
            .run(&pool)
            .await
            .map_err(|source| ConnectError::Migrate {
                url: super::redact(url),
                source,
            })?;
        Ok(Self { pool })
    }

    pub(crate) async fn push(&self, queue: &str, job: NewJob<'_>) -> StoreResult<JobId> {
        let mut builder = TaskBuilder::new(job.payload)
            .task_id(TaskId::from_ulid(job.id.ulid()))
            .max_attempts(job.max_attempts as usize)
            .run_at_timestamp(job.run_at);
        if let Some(key) = job.idempotency_key {
            builder = builder.idempotency_key(key);
        }
        let mut conn = self.pool.acquire().await?;
        // apalis's insert: `ON CONFLICT (job_type, idempotency_key) DO NOTHING`.
        queries::push_tasks(&mut *conn, queue, &[builder.build()])
            .await
            .map_err(driver_error)?;
        let Some(key) = job.idempotency_key else {
            return Ok(job.id);
        };
        let id: String =
            sqlx::query_scalar("SELECT id FROM Jobs WHERE job_type = ?1 AND idempotency_key = ?2")
                .bind(queue)
                .bind(key)
                .fetch_one(&mut *conn)
                .await?;
        super::parse_id(&id)
    }

    pub(crate) async fn status(&self, id: &JobId) -> StoreResult<Option<JobStatus>> {
        let row = sqlx::query(
            "SELECT job_type, status, attempts, max_attempts, last_result FROM Jobs WHERE id = ?1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let attempts = count(row.try_get("attempts")?);
        let max_attempts = count(row.try_get("max_attempts")?);
        let last_result: Option<String> = row.try_get("last_result")?;
        Ok(Some(JobStatus {
            id: id.clone(),
            queue: row.try_get("job_type")?,
            state: super::state(&status, attempts, max_attempts)?,
            attempts,
            max_attempts,
            last_error: last_error(last_result.as_deref()),
        }))
    }

    pub(crate) async fn register(&self, worker: &WorkerContext, queue: &str) -> StoreResult<()> {
        queries::register_worker(&self.pool, &config(queue, 1), worker, STORAGE_NAME).await
    }

    pub(crate) async fn heartbeat(
        &self,
        worker: &WorkerContext,
        queue: &str,
        orphan_after: Duration,
    ) -> StoreResult<u64> {
        let config = config(queue, 1);
        let mut tx = self.pool.begin().await?;
        queries::keep_alive(&mut *tx, &config, worker).await?;
        let reclaimed = queries::reenqueue_orphaned(
            &mut *tx,
            i64::try_from(orphan_after.as_secs()).unwrap_or(i64::MAX),
            queue,
            &WorkerFilter::AllExcept(worker.name().to_owned()),
        )
        .await?;
        tx.commit().await?;
        Ok(reclaimed)
    }

    pub(crate) async fn fetch(
        &self,
        worker: &WorkerContext,
        queue: &str,
        limit: usize,
    ) -> StoreResult<Vec<Fetched>> {
        let mut tx = self.pool.begin().await?;
        // apalis's fetch marks the jobs `Queued` and locked by this worker; its lock marks them
        // `Running`, in the same transaction, so that none stays `Queued` once fetched.
        let tasks = queries::fetch_next(&mut *tx, &config(queue, limit), worker)
            .await
            .map_err(driver_error)?;
        let ids: Vec<String> = tasks
            .iter()
            .filter_map(|task| task.ctx().task_id().map(ToString::to_string))
            .collect();
        if !ids.is_empty() {
            queries::lock_tasks(&mut *tx, &ids, worker.name()).await?;
        }
        tx.commit().await?;
        tasks
            .into_iter()
            .map(|task| super::fetched(&task.ctx().clone(), task.args))
            .collect()
    }

    pub(crate) async fn finish(
        &self,
        worker: &str,
        id: &JobId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> StoreResult<bool> {
        let (status, result) = match outcome {
            Outcome::Retry { error, run_at } => {
                let done = sqlx::query(
                    "UPDATE Jobs SET status = 'Failed', attempts = ?1, last_result = ?2, \
                     run_at = ?3, lock_by = NULL, lock_at = NULL, done_at = NULL \
                     WHERE id = ?4 AND lock_by = ?5",
                )
                .bind(i64::from(attempt))
                .bind(error_json(error))
                .bind(i64::try_from(run_at).unwrap_or(i64::MAX))
                .bind(id.to_string())
                .bind(worker)
                .execute(&self.pool)
                .await?;
                return Ok(done.rows_affected() == 1);
            }
            Outcome::Done => (Status::Done, Ok(serde_json::Value::Null)),
            // Failed with `attempts >= max_attempts`: what apalis counts as dead.
            Outcome::Dead { error } => (Status::Failed, Err(error.to_owned())),
            Outcome::Killed { error } => (Status::Killed, Err(error.to_owned())),
        };
        let ack = TaskResult {
            task_id: TaskId::from_ulid(id.ulid()),
            attempt: attempt as usize,
            status,
            result,
        };
        let acked = queries::ack_tasks(&self.pool, &[&ack], worker).await?;
        Ok(acked == 1)
    }

    pub(crate) async fn release(&self, worker: &str, ids: &[JobId]) -> StoreResult<Vec<JobId>> {
        let mut released = Vec::with_capacity(ids.len());
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let done = sqlx::query(
                "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
                 WHERE id = ?1 AND lock_by = ?2 AND status IN ('Queued', 'Running')",
            )
            .bind(id.to_string())
            .bind(worker)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 1 {
                released.push(id.clone());
            }
        }
        tx.commit().await?;
        Ok(released)
    }

    #[cfg(feature = "metrics")]
    pub(crate) async fn pending(&self, queue: &str) -> StoreResult<u64> {
        // Two counts, each over an index range that holds only waiting jobs. The failed ones
        // name apalis's partial index (failed with attempts left): without stats SQLite
        // prefers `(job_type, status, run_at)`, whose `Failed` range also holds every dead
        // job ever kept, a count that would grow with the table's history.
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM Jobs WHERE job_type = ?1 AND status = 'Pending' \
             AND lock_by IS NULL) + (SELECT COUNT(*) FROM Jobs INDEXED BY idx_jobs_failed \
             WHERE job_type = ?1 AND status = 'Failed' AND attempts < max_attempts)",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }
}

/// apalis's config for one queue; only the queue and the batch size matter to its queries.
fn config(queue: &str, batch: usize) -> Config {
    Config::default().queue(queue).batch_size(batch.max(1))
}

fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many times SQLite prepared again, at a step, the statements in `conn`'s cache whose
    /// text contains `needle`; `None` if no statement's does.
    #[allow(unsafe_code)]
    async fn reprepared(conn: &mut SqliteConnection, needle: &str) -> Option<i32> {
        use libsqlite3_sys::{
            SQLITE_STMTSTATUS_REPREPARE, sqlite3_next_stmt, sqlite3_sql, sqlite3_stmt_status,
        };
        let mut handle = conn.lock_handle().await.expect("the connection's handle");
        let db = handle.as_raw_handle().as_ptr();
        let mut count = None;
        // SAFETY: the locked handle is this task's alone; the statements walked are the
        // connection's own, alive while it is locked (sqlx finalizes them only on its worker
        // thread); `sqlite3_sql` gives a NUL-terminated string that the statement owns, read
        // before the next call.
        unsafe {
            let mut stmt = sqlite3_next_stmt(db, std::ptr::null_mut());
            while !stmt.is_null() {
                let sql = std::ffi::CStr::from_ptr(sqlite3_sql(stmt)).to_string_lossy();
                if sql.contains(needle) {
                    *count.get_or_insert(0) +=
                        sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_REPREPARE, 0);
                }
                stmt = sqlite3_next_stmt(db, stmt);
            }
        }
        count
    }

    #[tokio::test]
    async fn the_fetch_statement_is_prepared_once_however_often_the_worker_polls() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = SqliteStore::connect(&url, Duration::from_secs(10))
            .await
            .expect("the store");
        let worker = WorkerContext::new("prepared-once");
        store.register(&worker, "mail").await.expect("registered");
        // Polls with the limits a worker asks for as its slots fill and free.
        for limit in [4, 1, 4, 2, 4] {
            store.fetch(&worker, "mail", limit).await.expect("a poll");
        }
        // Every connection the pool opened, each statement cache read in turn: each is held
        // until the end, so that the next `acquire` takes another idle one.
        let mut held = Vec::new();
        let mut count = None;
        for _ in 0..store.pool.num_idle() {
            let mut conn = store.pool.acquire().await.expect("an idle connection");
            if let Some(more) = reprepared(&mut conn, "run_at <= ?4").await {
                *count.get_or_insert(0) += more;
            }
            held.push(conn);
        }
        let count =
            count.expect("apalis's fetch statement (fetch_next.sql) in a connection's cache");
        assert_eq!(
            count, 0,
            "the fetch statement was parsed and planned again {count} times in 5 polls"
        );
    }
}
