//! The errors of the extractor, as HTTP responses.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{ContentType, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use background_tasks::SpawnError;

/// Why [`BackgroundTasks`](crate::BackgroundTasks) could not spawn a task: the supervisor is
/// shutting down or at capacity.
///
/// It wraps the core's [`SpawnError`] (its [`source`](std::error::Error::source)) and, as an
/// actix [`ResponseError`], answers `503 Service Unavailable` with a `Retry-After` header and
/// the [`SpawnError`]'s message as a plain-text body, so that a handler can simply use `?`.
///
/// # Examples
///
/// ```
/// use actix_web::HttpResponse;
/// use background_tasks_actix::{BackgroundTaskError, BackgroundTasks};
///
/// async fn send_mail(tasks: BackgroundTasks) -> Result<HttpResponse, BackgroundTaskError> {
///     tasks.task("send-mail").spawn(async { /* ... */ })?;
///     Ok(HttpResponse::Accepted().finish())
/// }
/// # let _ = actix_web::web::post().to(send_mail);
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

    /// How long the client should wait before it retries, sent as the `Retry-After` header in
    /// whole seconds: 1 second at capacity or with a full queue, 5 seconds while shutting down.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks_actix::{BackgroundTaskError, SpawnError};
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
    /// use background_tasks_actix::{BackgroundTaskError, SpawnError};
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

impl ResponseError for BackgroundTaskError {
    /// Always `503 Service Unavailable`: both causes are temporary.
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        tracing::debug!("answering 503: {}", self.source);
        HttpResponse::build(self.status_code())
            .insert_header((RETRY_AFTER, self.retry_after().as_secs()))
            .insert_header(ContentType::plaintext())
            .body(self.source.to_string())
    }
}

/// The rejection of [`BackgroundTasks`](crate::BackgroundTasks) when no
/// [`BackgroundTasksMiddleware`](crate::BackgroundTasksMiddleware) wraps the handler's app: a
/// `500 Internal Server Error` whose body says how to register it.
///
/// # Examples
///
/// ```
/// use actix_web::ResponseError;
/// use actix_web::http::StatusCode;
/// use background_tasks_actix::MissingBackgroundTasksMiddleware;
///
/// let rejection = MissingBackgroundTasksMiddleware;
/// assert_eq!(rejection.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
/// assert!(rejection.to_string().contains(".wrap(BackgroundTasksMiddleware::new(supervisor.clone()))"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error(
    "BackgroundTasks was extracted, but no BackgroundTasksMiddleware wraps this handler; add \
     `.wrap(BackgroundTasksMiddleware::new(supervisor.clone()))` to the App, where `supervisor` \
     is your background_tasks::TaskSupervisor"
)]
pub struct MissingBackgroundTasksMiddleware;

impl ResponseError for MissingBackgroundTasksMiddleware {
    /// `500 Internal Server Error`: the server is misconfigured.
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header(ContentType::plaintext())
            .body(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    #[test]
    fn at_capacity_answers_503_with_a_retry_in_a_second_and_says_why() {
        let response =
            BackgroundTaskError::from(SpawnError::AtCapacity { limit: 3 }).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
        let body = response.into_body().try_into_bytes().unwrap();
        assert_eq!(body, SpawnError::AtCapacity { limit: 3 }.to_string());
    }

    #[test]
    fn a_full_queue_answers_503_with_a_retry_in_a_second_and_says_why() {
        let error = SpawnError::QueueFull { limit: 2, queue: 5 };
        let response = BackgroundTaskError::from(error).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
        let body = response.into_body().try_into_bytes().unwrap();
        assert_eq!(body, error.to_string());
    }

    #[test]
    fn shutting_down_asks_for_a_retry_in_five_seconds() {
        let response = BackgroundTaskError::from(SpawnError::ShuttingDown).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "5");
    }

    #[test]
    fn the_source_is_the_spawn_error() {
        let error = BackgroundTaskError::from(SpawnError::ShuttingDown);
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), SpawnError::ShuttingDown.to_string());
    }
}
