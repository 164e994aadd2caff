//! The PostgreSQL backend: apalis-postgres's schema (`apalis.jobs`, `apalis.workers`) and
//! queries.

use std::str::FromStr;
use std::time::Duration;

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use apalis_postgres::{Config, PostgresStorage, queries};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::{Fetched, NewJob, Outcome, StoreResult, driver_error, error_json, last_error};
use crate::error::ConnectError;
use crate::id::JobId;
use crate::status::JobStatus;

/// What the `apalis.workers` rows record as the storage.
const STORAGE_NAME: &str = "background-tasks-apalis/postgres";

/// `last_result` of a job done: the `Ok(null)` of apalis's `TaskResult`, as JSON.
const DONE_RESULT: &str = r#"{"Ok":null}"#;

/// PostgreSQL's code for a unique violation: a second job with the same idempotency key.
const UNIQUE_VIOLATION: &str = "23505";

#[derive(Debug, Clone)]
pub(crate) struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` and migrates apalis's tables.
    pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<Self, ConnectError> {
        let shown = super::redact(url);
        let unreachable = |source| ConnectError::Unreachable {
            url: shown.clone(),
            source,
        };
        let options =
            PgConnectOptions::from_str(url).map_err(|source| super::invalid_url(url, source))?;
        let pool = PgPoolOptions::new()
            // The pool's default waits 30 s for a connection; an enqueue must answer 503
            // within seconds when the server is gone.
            .acquire_timeout(timeout)
            // A connection that survived a server restart is dead: test it before use, so
            // that the first query after a restart does not fail.
            .test_before_acquire(true)
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        // sqlx's migrator takes an advisory lock: processes starting together migrate once.
        PostgresStorage::<()>::migrations()
            .run(&pool)
            .await
            .map_err(|source| ConnectError::Migrate {
                url: shown.clone(),
                source,
            })?;
        Ok(Self { pool })
    }

    pub(crate) async fn push(&self, queue: &str, job: NewJob<'_>) -> StoreResult<JobId> {
        let mut conn = self.pool.acquire().await?;
        push(&mut conn, queue, job).await
    }

    pub(crate) async fn status(&self, id: &JobId) -> StoreResult<Option<JobStatus>> {
        let row = sqlx::query(
            "SELECT job_type, status, attempts, max_attempts, last_result::text AS last_result \
             FROM apalis.jobs WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let status: String = row.try_get("status")?;
        let attempts = count(row.try_get::<i32, _>("attempts")?);
        let max_attempts = count(row.try_get::<i32, _>("max_attempts")?);
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
        // apalis's `register_worker` takes a timestamp type it does not export; this is its
        // `register.sql` with `NOW()`. Worker names are unique per start, so the insert never
        // meets a predecessor's row (whose advisory lock its dead session would still hold).
        sqlx::query(
            "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
             VALUES ($1, $2, $3, $4, NOW())",
        )
        .bind(worker.name())
        .bind(queue)
        .bind(STORAGE_NAME)
        .bind(worker.get_service())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn heartbeat(
        &self,
        worker: &WorkerContext,
        queue: &str,
        orphan_after: Duration,
    ) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        queries::keep_alive(&mut *tx, queue, worker)
            .await
            .map_err(driver_error)?;
        // Our own row was refreshed just above, in this transaction: only other, silent
        // workers' jobs are reclaimed.
        let reclaimed = queries::reenqueue_orphaned(&mut *tx, queue, orphan_after.as_secs())
            .await
            .map_err(driver_error)?;
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
        // apalis's fetch (`FOR UPDATE SKIP LOCKED`) marks the jobs `Queued` and locked by this
        // worker; its lock marks them `Running`, in the same transaction, so that none stays
        // `Queued` once fetched.
        let config = Config::default().queue(queue).batch_size(limit.max(1));
        let tasks = queries::fetch_next(&mut *tx, &config, worker)
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
                    "UPDATE apalis.jobs SET status = 'Failed', attempts = $1, \
                     last_result = $2::jsonb, run_at = to_timestamp($3), lock_by = NULL, \
                     lock_at = NULL, done_at = NULL WHERE id = $4 AND lock_by = $5",
                )
                .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
                .bind(error_json(error))
                .bind(i64::try_from(run_at).unwrap_or(i64::MAX))
                .bind(id.to_string())
                .bind(worker)
                .execute(&self.pool)
                .await?;
                return Ok(done.rows_affected() == 1);
            }
            Outcome::Done => (Status::Done, DONE_RESULT.to_owned()),
            // Failed with `attempts >= max_attempts`: what apalis counts as dead.
            Outcome::Dead { error } => (Status::Failed, error_json(error)),
            Outcome::Killed { error } => (Status::Killed, error_json(error)),
        };
        // What apalis's `handle_results` writes, for one job found by its key. That query
        // takes a JSON batch and finds its jobs among all those the worker has locked, done
        // ones included (they keep `lock_by`): run once per job, as here, its cost grows with
        // every job the worker has finished (0.66 ms a job after 1 000, against 0.05 ms for
        // this update; see docs/benchmarks.md).
        let done = sqlx::query(
            "UPDATE apalis.jobs SET status = $1, attempts = $2, last_result = $3::jsonb, \
             done_at = NOW() WHERE id = $4 AND lock_by = $5",
        )
        .bind(status.to_string())
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(result)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn release(&self, worker: &str, ids: &[JobId]) -> StoreResult<Vec<JobId>> {
        let wanted: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // apalis's `reenqueue_abandoned` adds an attempt; an interrupted job has not used one.
        let released: Vec<String> = sqlx::query_scalar(
            "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
             WHERE id = ANY($1) AND lock_by = $2 AND status IN ('Queued', 'Running') \
             RETURNING id",
        )
        .bind(&wanted)
        .bind(worker)
        .fetch_all(&self.pool)
        .await?;
        released.iter().map(|id| super::parse_id(id)).collect()
    }

    #[cfg(feature = "metrics")]
    pub(crate) async fn pending(&self, queue: &str) -> StoreResult<u64> {
        // The condition of apalis's partial index `idx_apalis_jobs_fetch_partial`, which
        // holds the waiting jobs only, so that the planner may count on it.
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM apalis.jobs WHERE job_type = $1 AND (status = 'Pending' \
             OR (status = 'Failed' AND attempts < max_attempts))",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(pending).unwrap_or(0))
    }
}

/// Stores `job` on `conn`: the pool's, or the caller's transaction.
pub(crate) async fn push(
    conn: &mut PgConnection,
    queue: &str,
    job: NewJob<'_>,
) -> StoreResult<JobId> {
    let mut builder = TaskBuilder::new(job.payload)
        .task_id(TaskId::from_ulid(job.id.ulid()))
        .max_attempts(job.max_attempts as usize)
        .run_at_timestamp(job.run_at);
    let Some(key) = job.idempotency_key else {
        queries::push_tasks(conn, queue, vec![builder.build()])
            .await
            .map_err(driver_error)?;
        return Ok(job.id);
    };
    builder = builder.idempotency_key(key);
    // apalis's insert has no `ON CONFLICT`: a second job with the key is a unique violation.
    // A savepoint keeps the caller's transaction usable after it.
    let mut savepoint = sqlx::Connection::begin(&mut *conn).await?;
    match queries::push_tasks(&mut *savepoint, queue, vec![builder.build()]).await {
        Ok(()) => {
            savepoint.commit().await?;
            return Ok(job.id);
        }
        Err(apalis_postgres::Error::Database(sqlx::Error::Database(error)))
            if error.code().as_deref() == Some(UNIQUE_VIOLATION) =>
        {
            savepoint.rollback().await?;
        }
        Err(error) => return Err(driver_error(error)),
    }
    let id: String = sqlx::query_scalar(
        "SELECT id FROM apalis.jobs WHERE job_type = $1 AND idempotency_key = $2",
    )
    .bind(queue)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    super::parse_id(&id)
}

fn count(value: i32) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use apalis_core::backend::TaskResult;

    use super::*;

    #[test]
    fn a_done_job_keeps_the_result_apalis_would_write() {
        let ack = TaskResult {
            task_id: TaskId::from_ulid(JobId::generate().ulid()),
            attempt: 1,
            status: Status::Done,
            result: Ok(serde_json::Value::Null),
        };
        let written = serde_json::to_value([&ack]).unwrap();
        let ours: serde_json::Value = serde_json::from_str(DONE_RESULT).unwrap();
        assert_eq!(written[0]["result"], ours);
        assert_eq!(written[0]["status"], Status::Done.to_string());
    }
}
