//! Reaching the tasks from a gRPC request.

use background_tasks_axum::{BackgroundTasks, MissingBackgroundTasksLayer};
use tonic::Status;

use crate::status::IntoStatus;

/// The [`BackgroundTasks`] of a gRPC request, which [`BackgroundTasksLayer`] put into its
/// extensions.
///
/// [`BackgroundTasksLayer`]: crate::BackgroundTasksLayer
pub trait RequestExt {
    /// The request's [`BackgroundTasks`], to spawn from a gRPC method.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_tonic::{IntoStatus, RequestExt};
    /// use tonic::{Request, Response, Status};
    ///
    /// async fn start_job(request: Request<()>) -> Result<Response<()>, Status> {
    ///     let tasks = request.background_tasks()?;
    ///     tasks.task("job").spawn(async {}).map_err(IntoStatus::into_status)?;
    ///     Ok(Response::new(()))
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// When no [`BackgroundTasksLayer`](crate::BackgroundTasksLayer) runs in front of the
    /// service: an `INTERNAL` status whose message says how to add it (the misconfiguration
    /// is also logged).
    fn background_tasks(&self) -> Result<BackgroundTasks, Status>;
}

impl<T> RequestExt for tonic::Request<T> {
    #[inline]
    fn background_tasks(&self) -> Result<BackgroundTasks, Status> {
        self.extensions()
            .get::<BackgroundTasks>()
            .cloned()
            .ok_or_else(|| MissingBackgroundTasksLayer.into_status())
    }
}
