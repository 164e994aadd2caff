//! tonic integration for [`background_tasks`]: gRPC methods spawn supervised background tasks,
//! and a tonic server shuts down within one budget that covers its connections and its tasks.
//!
//! tonic servers are tower services, so the pieces are those of `background-tasks-axum`:
//!
//! - [`BackgroundTasksLayer`] on a tonic `Server::builder().layer(...)` (or on the router
//!   that [`serve`] builds) makes the supervisor reachable from every request;
//! - [`RequestExt::background_tasks`] gives a gRPC method its [`BackgroundTasks`] in one line,
//!   and [`IntoStatus`] turns its errors into gRPC statuses: `UNAVAILABLE` with a
//!   `grpc-retry-pushback-ms` trailer when the supervisor is shutting down or at capacity;
//! - [`serve`] runs the services with `background_tasks_axum::serve`'s lifecycle: on SIGINT or
//!   SIGTERM, readiness flips, connections (HTTP/2 streams in flight) drain within
//!   `request_drain_timeout`, then the supervisor shuts down and its [`ShutdownReport`] is
//!   returned; a second signal aborts at once.
//!
//! ```
//! use std::time::Duration;
//! use background_tasks_tonic::{IntoStatus, RequestExt, TaskSupervisor, serve};
//! use tonic::{Request, Response, Status};
//!
//! // In a method of a tonic service:
//! async fn start_job(request: Request<()>) -> Result<Response<()>, Status> {
//!     let tasks = request.background_tasks()?;
//!     tasks
//!         .task("grpc-job")
//!         .spawn(async { tokio::time::sleep(Duration::from_millis(50)).await })
//!         .map_err(IntoStatus::into_status)?;
//!     Ok(Response::new(()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let supervisor = TaskSupervisor::new();
//! let routes = tonic::service::Routes::default(); // `Routes::new(JobsServer::new(service))`
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let report = serve(listener, routes, supervisor)
//!     .request_drain_timeout(Duration::from_secs(10))
//! #   .shutdown_signal(async {})
//!     .await?;
//! println!("shutdown report: {report}");
//! # Ok(())
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod request;
mod serve;
mod status;

pub use request::RequestExt;
pub use serve::serve;
pub use status::IntoStatus;

/// The core's types, so that a tonic app needs this crate only.
pub use background_tasks::{
    ShutdownReport, SpawnError, SupervisorBuilder, TaskContext, TaskError, TaskFailure, TaskHandle,
    TaskId, TaskRecord, TaskSupervisor, TrackedFuture,
};
/// The layer, the extractor and the lifecycle types, from `background-tasks-axum`.
pub use background_tasks_axum::{
    BackgroundTaskBuilder, BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer,
    BackgroundTasksService, MissingBackgroundTasksLayer, Readiness, Serve, ServeError, ServeFuture,
};
