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
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{Fetched, NewJob, Outcome, StoreResult, driver_error, error_json, last_error};
use crate::error::ConnectError;
use crate::id::JobId;
use crate::status::JobStatus;

/// What the `Workers` rows record as the storage.
const STORAGE_NAME: &str = "background-tasks-apalis/sqlite";

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
