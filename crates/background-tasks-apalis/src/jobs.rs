//! The handle to the job storage: connect, enqueue, read.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use background_tasks::TaskSupervisor;
use tokio::sync::Notify;

use crate::error::{ConnectError, DurableJobError};
use crate::id::JobId;
use crate::job::Job;
use crate::options::EnqueueOptions;
use crate::status::JobStatus;
use crate::store::{NewJob, Store, run_at_after, sqlite::SqliteStore};
use crate::worker::WorkersBuilder;

/// The job storage: where jobs are enqueued and read, and what [`Workers`](crate::Workers)
/// fetch from.
///
/// Cloning it is cheap and gives another handle to the same storage and connection pool.
///
/// # Examples
///
/// ```
/// use background_tasks::TaskSupervisor;
/// use background_tasks_apalis::{BoxError, DurableJobs, Job, JobContext, JobState};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet {
///     name: String,
/// }
///
/// impl Job for Greet {
///     const NAME: &'static str = "greet";
///     type State = ();
///     async fn run(self, _state: (), _ctx: JobContext) -> Result<(), BoxError> {
///         println!("hello, {}", self.name);
///         Ok(())
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("bta-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let url = format!("sqlite://{}/jobs.db", dir.display());
/// let supervisor = TaskSupervisor::new();
/// let jobs = DurableJobs::builder(&url).supervisor(&supervisor).connect().await?;
/// let workers = jobs.workers(&supervisor).job::<Greet>(4, ()).start().await?;
///
/// let id = jobs.enqueue(Greet { name: "Ada".into() }).await?;
/// # while !jobs.status(&id).await?.is_some_and(|status| status.state().is_final()) {
/// #     tokio::time::sleep(std::time::Duration::from_millis(20)).await;
/// # }
/// assert_eq!(jobs.status(&id).await?.unwrap().state(), JobState::Done);
///
/// let report = workers.finish(supervisor.shutdown().await).await;
/// assert_eq!(report.returned().len(), 0);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DurableJobs {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    supervisor: Option<TaskSupervisor>,
    max_attempts: u32,
    /// Wakes this process's fetchers when it enqueues, so that a job does not wait for the
    /// next poll.
    pub(crate) enqueued: Notify,
    /// The job types run by workers started from these jobs, and their running handlers.
    #[cfg(feature = "metrics")]
    pub(crate) running: crate::metrics::RunningJobs,
}

impl DurableJobs {
    /// Opens the storage at `url` with the default settings; see [`builder`](Self::builder).
    ///
    /// # Errors
    ///
    /// As [`DurableJobsBuilder::connect`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves closes what it opened.
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::builder(url).connect().await
    }

    /// A builder to open the storage at `url`: `sqlite://<file>` (created if missing), or
    /// `postgres://…` (or `postgresql://…`) with the feature `postgres`, whose database must
    /// exist; apalis's tables are created in it (schema `apalis`) if missing.
    pub fn builder(url: &str) -> DurableJobsBuilder {
        DurableJobsBuilder {
            url: url.to_owned(),
            supervisor: None,
            max_attempts: DurableJobsBuilder::DEFAULT_MAX_ATTEMPTS,
            timeout: DurableJobsBuilder::DEFAULT_TIMEOUT,
        }
    }

    /// Stores `job` in its queue to run as soon as a worker is free, with the default
    /// attempts; returns its id.
    ///
    /// # Errors
    ///
    /// [`DurableJobError::ShuttingDown`] once the supervisor given to
    /// [`DurableJobsBuilder::supervisor`] is shutting down, [`DurableJobError::Unavailable`]
    /// when the database does not answer within the builder's timeout, and
    /// [`DurableJobError::Serialize`] when `job` does not serialize.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may or may not have stored the job.
    pub async fn enqueue<J: Job>(&self, job: J) -> Result<JobId, DurableJobError> {
        self.enqueue_with(job, EnqueueOptions::new()).await
    }

    /// Stores `job` with `options`: a delay, an idempotency key (a second enqueue with the same
    /// key returns the first job's id and stores nothing), the maximum attempts.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue).
    ///
    /// # Cancel safety
    ///
    /// As [`enqueue`](Self::enqueue).
    pub async fn enqueue_with<J: Job>(
        &self,
        job: J,
        options: EnqueueOptions,
    ) -> Result<JobId, DurableJobError> {
        let (queue, new) = self.prepare(job, &options)?;
        #[cfg(feature = "metrics")]
        let generated = new.id.clone();
        let id = self
            .inner
            .store
            .push(queue, new)
            .await
            .map_err(DurableJobError::Unavailable)?;
        self.inner.enqueued.notify_waiters();
        // Another id is the job stored earlier under the same idempotency key: nothing stored.
        #[cfg(feature = "metrics")]
        if id == generated {
            crate::metrics::enqueued(queue);
        }
        Ok(id)
    }

    /// Stores `job` with `options` in the caller's PostgreSQL transaction (or connection), so
    /// that it is stored exactly when the rest of the transaction is: it becomes visible to
    /// workers at the commit, and a rollback removes it. `conn` must reach the database these
    /// jobs were [connected](DurableJobsBuilder::connect) to.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use background_tasks_apalis::{BoxError, DurableJobs, EnqueueOptions, Job, JobContext};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct SendReceipt { order: i64 }
    /// # impl Job for SendReceipt {
    /// #     const NAME: &'static str = "send-receipt";
    /// #     type State = ();
    /// #     async fn run(self, _: (), _: JobContext) -> Result<(), BoxError> { Ok(()) }
    /// # }
    /// # async fn order(jobs: DurableJobs, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut tx = pool.begin().await?;
    /// let order: i64 = sqlx::query_scalar("INSERT INTO orders DEFAULT VALUES RETURNING id")
    ///     .fetch_one(&mut *tx)
    ///     .await?;
    /// jobs.enqueue_in(&mut tx, SendReceipt { order }, EnqueueOptions::new()).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue), and [`DurableJobError::NotPostgres`] when these jobs are
    /// stored in SQLite. An error leaves the caller's transaction usable.
    ///
    /// # Cancel safety
    ///
    /// As [`enqueue`](Self::enqueue); what the transaction holds is decided by its commit.
    #[cfg(feature = "postgres")]
    pub async fn enqueue_in<J: Job>(
        &self,
        conn: &mut sqlx::PgConnection,
        job: J,
        options: EnqueueOptions,
    ) -> Result<JobId, DurableJobError> {
        if !matches!(self.inner.store, Store::Postgres(_)) {
            return Err(DurableJobError::NotPostgres);
        }
        let (queue, new) = self.prepare(job, &options)?;
        #[cfg(feature = "metrics")]
        let generated = new.id.clone();
        let id = crate::store::postgres::push(conn, queue, new)
            .await
            .map_err(DurableJobError::Unavailable)?;
        // Counted at the insert: a rollback afterwards does not take it back.
        #[cfg(feature = "metrics")]
        if id == generated {
            crate::metrics::enqueued(queue);
        }
        // The job is visible at the commit, which this process does not see: the fetchers find
        // it at their next poll.
        Ok(id)
    }

    /// Checks that enqueues are open, and serializes `job` with `options`.
    fn prepare<'a, J: Job>(
        &self,
        job: J,
        options: &'a EnqueueOptions,
    ) -> Result<(&'static str, NewJob<'a>), DurableJobError> {
        if self
            .inner
            .supervisor
            .as_ref()
            .is_some_and(TaskSupervisor::is_shutting_down)
        {
            return Err(DurableJobError::ShuttingDown);
        }
        let payload = serde_json::to_vec(&job).map_err(DurableJobError::Serialize)?;
        Ok((
            J::NAME,
            NewJob {
                id: JobId::generate(),
                payload,
                run_at: run_at_after(options.delay),
                max_attempts: options.max_attempts.unwrap_or(self.inner.max_attempts),
                idempotency_key: options.idempotency_key.as_deref(),
            },
        ))
    }

    /// The job's state, attempts and last error; `None` when no such job is stored.
    ///
    /// # Errors
    ///
    /// [`DurableJobError::Unavailable`] when the database does not answer.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads.
    pub async fn status(&self, id: &JobId) -> Result<Option<JobStatus>, DurableJobError> {
        self.inner
            .store
            .status(id)
            .await
            .map_err(DurableJobError::Unavailable)
    }

    /// A builder for the workers that run jobs of the types it is given, as tasks of
    /// `supervisor`.
    pub fn workers(&self, supervisor: &TaskSupervisor) -> WorkersBuilder {
        WorkersBuilder::new(self.clone(), supervisor.clone())
    }
}

impl fmt::Debug for DurableJobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableJobs")
            .field("store", &self.inner.store)
            .field("max_attempts", &self.inner.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Opens the job storage; from [`DurableJobs::builder`].
#[derive(Debug)]
#[must_use = "a DurableJobsBuilder does nothing until `connect` is called"]
pub struct DurableJobsBuilder {
    url: String,
    supervisor: Option<TaskSupervisor>,
    max_attempts: u32,
    timeout: Duration,
}

impl DurableJobsBuilder {
    /// Attempts per job unless the enqueue says otherwise.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// How long a query waits for a connection (and SQLite for its lock) before it fails.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

    /// Refuses enqueues with [`DurableJobError::ShuttingDown`] once `supervisor` is shutting
    /// down, as the in-process spawn does.
    pub fn supervisor(mut self, supervisor: &TaskSupervisor) -> Self {
        self.supervisor = Some(supervisor.clone());
        self
    }

    /// Attempts per job when an enqueue does not set them; at least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a query may wait for a connection, or SQLite for its write lock, before it
    /// fails as [`DurableJobError::Unavailable`]: an unreachable database answers within it,
    /// not after the pool's default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Opens the database and creates or migrates apalis's tables.
    ///
    /// # Errors
    ///
    /// [`ConnectError::UnsupportedUrl`] for a URL of another scheme,
    /// [`ConnectError::InvalidUrl`] for one that does not parse,
    /// [`ConnectError::Unreachable`] when the database cannot be opened or reached within the
    /// timeout, and [`ConnectError::Migrate`] when the tables cannot be set up.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it resolves closes what it opened.
    pub async fn connect(self) -> Result<DurableJobs, ConnectError> {
        let store = if self.url.starts_with("sqlite:") {
            Store::Sqlite(SqliteStore::connect(&self.url, self.timeout).await?)
        } else if cfg!(feature = "postgres")
            && (self.url.starts_with("postgres:") || self.url.starts_with("postgresql:"))
        {
            postgres(&self.url, self.timeout).await?
        } else {
            return Err(ConnectError::UnsupportedUrl {
                url: crate::store::redact(&self.url),
                postgres: POSTGRES_HINT,
            });
        };
        Ok(DurableJobs {
            inner: Arc::new(Inner {
                store,
                supervisor: self.supervisor,
                max_attempts: self.max_attempts,
                enqueued: Notify::new(),
                #[cfg(feature = "metrics")]
                running: crate::metrics::RunningJobs::default(),
            }),
        })
    }
}

/// What `postgres://` URLs look like, or why this build refuses them.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES_HINT: &str = " or postgres://<user>:<password>@<host>:<port>/<database>";
#[cfg(not(feature = "postgres"))]
pub(crate) const POSTGRES_HINT: &str = " (postgres:// needs the feature `postgres`)";

#[cfg(feature = "postgres")]
async fn postgres(url: &str, timeout: Duration) -> Result<Store, ConnectError> {
    crate::store::postgres::PostgresStore::connect(url, timeout)
        .await
        .map(Store::Postgres)
}

#[cfg(not(feature = "postgres"))]
async fn postgres(url: &str, _timeout: Duration) -> Result<Store, ConnectError> {
    // Not reached: `connect` only calls it with the feature on.
    Err(ConnectError::UnsupportedUrl {
        url: crate::store::redact(url),
        postgres: POSTGRES_HINT,
    })
}
