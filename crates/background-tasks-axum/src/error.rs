//! The error of the extractor's spawn methods, as an HTTP response.

use std::time::Duration;

use axum_core::response::{IntoResponse, Response};
use background_tasks::SpawnError;
use http::StatusCode;
use http::header::{HeaderValue, RETRY_AFTER};

/// Why [`BackgroundTasks`](crate::BackgroundTasks) could not spawn a task: the supervisor is
/// shutting down or at capacity, or the queue of the task's name is full.
///
/// It wraps the core's [`SpawnError`] (its [`source`](std::error::Error::source)) and turns into
/// a `503 Service Unavailable` response with a `Retry-After` header and the
/// [`SpawnError`]'s message as a plain-text body, so that a handler can simply use `?`.
///
/// # Examples
///
/// ```
/// use axum::{Router, http::StatusCode, routing::post};
/// use background_tasks_axum::{BackgroundTaskError, BackgroundTasks};
///
/// async fn send_mail(tasks: BackgroundTasks) -> Result<StatusCode, BackgroundTaskError> {
///     tasks.task("send-mail").spawn(async { /* ... */ })?;
///     Ok(StatusCode::ACCEPTED)
/// }
///
/// let app: Router = Router::new().route("/mail", post(send_mail));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("could not spawn a background task")]
pub struct BackgroundTaskError {
    #[source]
    source: SpawnError,
}

impl BackgroundTaskError {
    /// How long a client should wait before it retries when the supervisor is at capacity.
    const RETRY_AT_CAPACITY: Duration = Duration::from_secs(1);
    /// How long a client should wait before it retries when the supervisor is shutting down:
    /// about a restart, or long enough for a load balancer to send it elsewhere.
    const RETRY_SHUTTING_DOWN: Duration = Duration::from_secs(5);

    /// The status of the response: always `503 Service Unavailable`, since both causes are
    /// temporary.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::http::StatusCode;
    /// use background_tasks::SpawnError;
    /// use background_tasks_axum::BackgroundTaskError;
    ///
    /// let error = BackgroundTaskError::from(SpawnError::ShuttingDown);
    /// assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    /// ```
    #[must_use]
    pub fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    /// How long the client should wait before it retries, sent as the `Retry-After` header in
    /// whole seconds: 1 second at capacity or with a full queue (tasks end all the time), 5
    /// seconds while shutting down (about a restart, or long enough for a load balancer to
    /// route elsewhere).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::SpawnError;
    /// use background_tasks_axum::BackgroundTaskError;
    ///
    /// let error = BackgroundTaskError::from(SpawnError::ShuttingDown);
    /// assert_eq!(error.retry_after(), Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn retry_after(&self) -> Duration {
        match self.source {
            SpawnError::ShuttingDown => Self::RETRY_SHUTTING_DOWN,
            _ => Self::RETRY_AT_CAPACITY,
        }
    }

    /// The core's error, to tell shutting down from at capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks::SpawnError;
    /// use background_tasks_axum::BackgroundTaskError;
    ///
    /// let error = BackgroundTaskError::from(SpawnError::AtCapacity { limit: 8 });
    /// assert_eq!(error.into_inner(), SpawnError::AtCapacity { limit: 8 });
    /// ```
    #[must_use]
    pub fn into_inner(self) -> SpawnError {
        self.source
    }
}

impl From<SpawnError> for BackgroundTaskError {
    #[inline]
    fn from(source: SpawnError) -> Self {
        Self { source }
    }
}

impl IntoResponse for BackgroundTaskError {
    fn into_response(self) -> Response {
        tracing::debug!("answering 503: {}", self.source);
        let mut response = (self.status(), self.source.to_string()).into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after().as_secs()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_capacity_asks_for_a_retry_in_a_second() {
        let response =
            BackgroundTaskError::from(SpawnError::AtCapacity { limit: 3 }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn a_full_queue_asks_for_a_retry_in_a_second() {
        let response =
            BackgroundTaskError::from(SpawnError::QueueFull { limit: 2, queue: 5 }).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn the_source_is_the_spawn_error() {
        let error = BackgroundTaskError::from(SpawnError::ShuttingDown);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), SpawnError::ShuttingDown.to_string());
    }
}
