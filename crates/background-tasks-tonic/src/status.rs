//! The extractor's errors as gRPC statuses.

use background_tasks_axum::{BackgroundTaskError, MissingBackgroundTasksLayer};
use tonic::Status;
use tonic::metadata::MetadataValue;

/// Turns the errors of [`BackgroundTasks`](crate::BackgroundTasks) into gRPC statuses, for
/// `.map_err(IntoStatus::into_status)?` in a gRPC method.
pub trait IntoStatus {
    /// The gRPC status that answers the error.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_tonic::{BackgroundTaskError, IntoStatus, SpawnError};
    /// use tonic::Code;
    ///
    /// let status = BackgroundTaskError::from(SpawnError::ShuttingDown).into_status();
    /// assert_eq!(status.code(), Code::Unavailable);
    /// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "5000");
    /// ```
    fn into_status(self) -> Status;
}

impl IntoStatus for BackgroundTaskError {
    /// `UNAVAILABLE`, which clients may retry, with the [`SpawnError`]'s message and the
    /// [`retry_after`](BackgroundTaskError::retry_after) delay as the `grpc-retry-pushback-ms`
    /// trailer that gRPC's retry policy honours.
    ///
    /// [`SpawnError`]: crate::SpawnError
    fn into_status(self) -> Status {
        let pushback = self.retry_after().as_millis();
        let mut status = Status::unavailable(self.into_inner().to_string());
        status.metadata_mut().insert(
            "grpc-retry-pushback-ms",
            MetadataValue::from(u64::try_from(pushback).unwrap_or(u64::MAX)),
        );
        status
    }
}

impl IntoStatus for MissingBackgroundTasksLayer {
    /// `INTERNAL`: the server is misconfigured; the message says how to add the layer.
    fn into_status(self) -> Status {
        tracing::error!("{self}");
        Status::internal(format!(
            "{self}; on a tonic server: `Server::builder().layer(BackgroundTasksLayer::new(supervisor))`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use background_tasks::SpawnError;
    use tonic::Code;

    use super::*;

    #[test]
    fn at_capacity_is_unavailable_with_a_pushback_of_a_second() {
        let status = BackgroundTaskError::from(SpawnError::AtCapacity { limit: 2 }).into_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            SpawnError::AtCapacity { limit: 2 }.to_string()
        );
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            "1000"
        );
    }

    #[test]
    fn a_missing_layer_is_internal_and_says_how_to_add_it() {
        let status = MissingBackgroundTasksLayer.into_status();
        assert_eq!(status.code(), Code::Internal);
        assert!(
            status
                .message()
                .contains(".layer(BackgroundTasksLayer::new(supervisor))")
        );
    }
}
