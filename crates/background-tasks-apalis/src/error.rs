//! Errors of connecting, enqueueing and reading jobs.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};

/// Why [`DurableJobs::connect`](crate::DurableJobs::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is not one this crate can open.
    #[error(
        "{url:?} is not a database URL this build can open: expected sqlite://<file> \
         (created if missing){postgres}"
    )]
    UnsupportedUrl {
        /// The URL, without its password.
        url: String,
        /// What else is accepted.
        postgres: &'static str,
    },
    /// The URL has a scheme this crate opens, but does not parse (a port that is not a
    /// number, an unknown option).
    #[error(
        "{url:?} is not a valid database URL ({source}): expected sqlite://<file> (created \
         if missing){postgres}"
    )]
    InvalidUrl {
        /// The URL, without its password.
        url: String,
        /// What else is accepted.
        postgres: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be opened or reached.
    #[error("cannot open the job database {url}: {source}; check that it exists and is reachable")]
    Unreachable {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The job tables could not be created or migrated.
    #[error("cannot set up the job tables in {url}: {source}")]
    Migrate {
        /// The URL, without its password.
        url: String,
        /// The migration's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
}

/// Why a job could not be enqueued or read, or workers not started: the storage is
/// unreachable, or the supervisor is shutting down.
///
/// Turns into `503 Service Unavailable` with a `Retry-After` header (or `500` when the job
/// does not serialize), so that an axum handler can simply use `?`.
///
/// # Examples
///
/// ```
/// use axum::{extract::State, http::StatusCode};
/// use background_tasks_apalis::{BoxError, DurableJobs, DurableJobError, Job, JobContext};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendMail;
///
/// impl Job for SendMail {
///     const NAME: &'static str = "send-mail";
///     type State = ();
///     async fn run(self, _: (), _: JobContext) -> Result<(), BoxError> { Ok(()) }
/// }
///
/// async fn sign_up(State(jobs): State<DurableJobs>) -> Result<StatusCode, DurableJobError> {
///     jobs.enqueue(SendMail).await?;
///     Ok(StatusCode::ACCEPTED)
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableJobError {
    /// The supervisor is shutting down.
    #[error("the server is shutting down and accepts no more jobs; retry on another instance")]
    ShuttingDown,
    /// The database did not answer, or answered with an error.
    #[error("the job database is unavailable ({0}); retry shortly")]
    Unavailable(#[source] sqlx::Error),
    /// The job does not serialize to JSON.
    #[error("the job does not serialize to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A job was enqueued in a PostgreSQL transaction, but these jobs are stored elsewhere.
    #[error(
        "enqueue_in needs jobs stored in PostgreSQL: connect DurableJobs to a postgres:// URL, \
         or use enqueue_with"
    )]
    NotPostgres,
}

impl DurableJobError {
    /// `503 Service Unavailable` for [`ShuttingDown`](Self::ShuttingDown) and
    /// [`Unavailable`](Self::Unavailable), which pass; `500` for a job that does not serialize
    /// and for a misuse.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::StatusCode;
    /// use background_tasks_apalis::DurableJobError;
    ///
    /// assert_eq!(DurableJobError::ShuttingDown.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Serialize(_) | Self::NotPostgres => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ShuttingDown | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// How long a client should wait before it retries, sent as `Retry-After`: 5 s while
    /// shutting down (about a restart), 1 s while the database is unavailable; `None` for an
    /// error that a retry does not fix.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::ShuttingDown => Some(Duration::from_secs(5)),
            Self::Unavailable(_) => Some(Duration::from_secs(1)),
            Self::Serialize(_) | Self::NotPostgres => None,
        }
    }
}

impl IntoResponse for DurableJobError {
    fn into_response(self) -> Response {
        tracing::debug!("answering {}: {self}", self.status());
        let mut response = (self.status(), self.to_string()).into_response();
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_and_shutting_down_answer_503_with_retry_after() {
        for (error, after) in [
            (DurableJobError::ShuttingDown, "5"),
            (DurableJobError::Unavailable(sqlx::Error::PoolTimedOut), "1"),
        ] {
            let response = error.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[RETRY_AFTER], after);
        }
    }
}
