//! The storage behind the jobs: apalis's tables and queries, on SQLite or PostgreSQL.
//!
//! Every query apalis ships for what we need is used as it is (its migrations, its insert with
//! the idempotency key, its fetch-and-lock, its heartbeat, its orphan reclaim, its ack). Three
//! are ours, because apalis's own do something else: a retry that is scheduled after a backoff
//! (apalis retries at once, in memory), a release that puts an interrupted job back without
//! consuming an attempt (apalis's `reenqueue_abandoned` adds one), and a status read that
//! keeps the last error.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use apalis_core::task::ExecutionContext;
use apalis_core::task::status::Status;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;

use crate::error::ConnectError;
use crate::id::JobId;
use crate::status::{JobState, JobStatus};

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The result of a storage call; every error is the driver's.
pub(crate) type StoreResult<T> = Result<T, sqlx::Error>;

/// A job taken from the queue and locked by this worker.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) id: JobId,
    pub(crate) payload: Vec<u8>,
    /// Attempts ended before this run.
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
}

/// A job to store.
#[derive(Debug)]
pub(crate) struct NewJob<'a> {
    pub(crate) id: JobId,
    pub(crate) payload: Vec<u8>,
    pub(crate) run_at: u64,
    pub(crate) max_attempts: u32,
    pub(crate) idempotency_key: Option<&'a str>,
}

/// How an attempt ended, as stored.
#[derive(Debug)]
pub(crate) enum Outcome<'a> {
    Done,
    /// Failed; runs again at `run_at` (Unix seconds).
    Retry {
        error: &'a str,
        run_at: u64,
    },
    /// Failed its last attempt.
    Dead {
        error: &'a str,
    },
    /// Will never run: its payload does not deserialize.
    Killed {
        error: &'a str,
    },
}

#[cfg(feature = "metrics")]
impl Outcome<'_> {
    /// The `outcome` label of `background_jobs_finished_total`.
    pub(crate) fn metric(&self) -> crate::metrics::Outcome {
        match self {
            Outcome::Done => crate::metrics::Outcome::Done,
            Outcome::Retry { .. } => crate::metrics::Outcome::Failed,
            Outcome::Dead { .. } | Outcome::Killed { .. } => crate::metrics::Outcome::Dead,
        }
    }
}

/// One of the backends.
#[derive(Debug, Clone)]
pub(crate) enum Store {
    Sqlite(sqlite::SqliteStore),
    #[cfg(feature = "postgres")]
    Postgres(postgres::PostgresStore),
}

/// Calls the same method on whichever backend `$store` is.
macro_rules! dispatch {
    ($store:expr, $method:ident($($arg:expr),*)) => {
        match $store {
            Store::Sqlite(store) => store.$method($($arg),*).await,
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.$method($($arg),*).await,
        }
    };
}

impl Store {
    pub(crate) async fn push(&self, queue: &str, job: NewJob<'_>) -> StoreResult<JobId> {
        dispatch!(self, push(queue, job))
    }

    pub(crate) async fn status(&self, id: &JobId) -> StoreResult<Option<JobStatus>> {
        dispatch!(self, status(id))
    }

    pub(crate) async fn register(&self, worker: &WorkerContext, queue: &str) -> StoreResult<()> {
        dispatch!(self, register(worker, queue))
    }

    /// Marks the worker alive and reclaims the jobs of workers silent for `orphan_after`;
    /// returns how many it reclaimed.
    pub(crate) async fn heartbeat(
        &self,
        worker: &WorkerContext,
        queue: &str,
        orphan_after: Duration,
    ) -> StoreResult<u64> {
        dispatch!(self, heartbeat(worker, queue, orphan_after))
    }

    pub(crate) async fn fetch(
        &self,
        worker: &WorkerContext,
        queue: &str,
        limit: usize,
    ) -> StoreResult<Vec<Fetched>> {
        dispatch!(self, fetch(worker, queue, limit))
    }

    /// Records how an attempt ended; `attempt` counts it. Returns whether the job was still
    /// this worker's.
    pub(crate) async fn finish(
        &self,
        worker: &str,
        id: &JobId,
        attempt: u32,
        outcome: Outcome<'_>,
    ) -> StoreResult<bool> {
        dispatch!(self, finish(worker, id, attempt, outcome))
    }

    /// Puts jobs this worker runs back in the queue without consuming an attempt; returns the
    /// ids it released.
    pub(crate) async fn release(&self, worker: &str, ids: &[JobId]) -> StoreResult<Vec<JobId>> {
        dispatch!(self, release(worker, ids))
    }

    /// How many jobs of `queue` wait to run: pending (new, delayed, or put back) or failed
    /// with attempts left; what the fetch takes once they are due. Counted over indexes that
    /// hold the waiting jobs only: the cost grows with the queue, not with the jobs done.
    #[cfg(feature = "metrics")]
    pub(crate) async fn pending(&self, queue: &str) -> StoreResult<u64> {
        dispatch!(self, pending(queue))
    }
}

/// Now, in Unix seconds, as the stores keep time.
#[cfg(test)]
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The first whole Unix second at or after `delay` from now: a job never runs early.
pub(crate) fn run_at_after(delay: Duration) -> u64 {
    let at = SystemTime::now() + delay;
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    since.as_secs() + u64::from(since.subsec_nanos() > 0 && !delay.is_zero())
}

/// The error text apalis stores in `last_result`: `{"Err": "..."}`.
pub(crate) fn error_json(error: &str) -> String {
    serde_json::json!({ "Err": error }).to_string()
}

/// The error kept in `last_result`, if it holds one.
pub(crate) fn last_error(last_result: Option<&str>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(last_result?).ok()?;
    value.get("Err")?.as_str().map(str::to_owned)
}

/// apalis's errors carry the driver's; the others are decoding errors.
pub(crate) fn driver_error(error: impl Into<ApalisError>) -> sqlx::Error {
    match error.into() {
        ApalisError::Sqlite(apalis_sqlite::Error::Database(error)) => error,
        ApalisError::Sqlite(other) => sqlx::Error::Protocol(other.to_string()),
        #[cfg(feature = "postgres")]
        ApalisError::Postgres(apalis_postgres::Error::Database(error)) => error,
        #[cfg(feature = "postgres")]
        ApalisError::Postgres(other) => sqlx::Error::Protocol(other.to_string()),
    }
}

/// An error of one of the apalis backends.
#[derive(Debug)]
pub(crate) enum ApalisError {
    Sqlite(apalis_sqlite::Error),
    #[cfg(feature = "postgres")]
    Postgres(apalis_postgres::Error),
}

impl From<apalis_sqlite::Error> for ApalisError {
    fn from(error: apalis_sqlite::Error) -> Self {
        Self::Sqlite(error)
    }
}

#[cfg(feature = "postgres")]
impl From<apalis_postgres::Error> for ApalisError {
    fn from(error: apalis_postgres::Error) -> Self {
        Self::Postgres(error)
    }
}

/// The job apalis fetched, as the workers see it.
pub(crate) fn fetched(ctx: &ExecutionContext, payload: Vec<u8>) -> StoreResult<Fetched> {
    let id = ctx
        .task_id()
        .and_then(TaskId::as_ulid)
        .ok_or_else(|| sqlx::Error::Protocol("a job without a ULID id".into()))?;
    Ok(Fetched {
        id: JobId::from_ulid(id),
        payload,
        attempts: u32::try_from(ctx.attempt()).unwrap_or(u32::MAX),
        max_attempts: u32::try_from(ctx.max_attempts().unwrap_or(1)).unwrap_or(u32::MAX),
    })
}

pub(crate) fn parse_id(id: &str) -> StoreResult<JobId> {
    id.parse()
        .map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// apalis's statuses, as this crate names them.
pub(crate) fn state(status: &str, attempts: u32, max_attempts: u32) -> StoreResult<JobState> {
    let status = Status::from_str(status).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    Ok(match status {
        Status::Pending | Status::Queued => JobState::Pending,
        Status::Running => JobState::Running,
        Status::Done => JobState::Done,
        Status::Failed if attempts >= max_attempts => JobState::Dead,
        Status::Failed => JobState::Failed,
        Status::Killed => JobState::Dead,
        other => {
            return Err(sqlx::Error::Protocol(format!(
                "a job status this version does not know: {other:?}"
            )));
        }
    })
}

/// A URL of a known scheme that the driver cannot parse.
pub(crate) fn invalid_url(url: &str, source: sqlx::Error) -> ConnectError {
    ConnectError::InvalidUrl {
        url: redact(url),
        postgres: crate::jobs::POSTGRES_HINT,
        source,
    }
}

/// `url` without its password, for errors and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_rounded_up_to_the_next_second() {
        let now = unix_now();
        let at = run_at_after(Duration::from_millis(1500));
        assert!((now + 2..=now + 3).contains(&at), "{now} -> {at}");
        assert!(run_at_after(Duration::ZERO) <= unix_now());
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact("postgres://app:s3cret@db.internal:5432/jobs"),
            "postgres://app:***@db.internal:5432/jobs"
        );
        assert_eq!(redact("postgres://app@db/jobs"), "postgres://app@db/jobs");
        assert_eq!(redact("sqlite://jobs.db"), "sqlite://jobs.db");
    }

    #[test]
    fn the_last_error_is_read_from_apalis_result_json() {
        assert_eq!(
            last_error(Some(&error_json("boom"))).as_deref(),
            Some("boom")
        );
        assert_eq!(last_error(Some("null")), None);
        assert_eq!(last_error(None), None);
    }
}
