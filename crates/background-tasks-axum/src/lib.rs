//! axum integration for [`background_tasks`]: spawn supervised background tasks from handlers,
//! run work after the response has been sent, and serve an app with one shutdown budget that
//! covers its connections and its tasks.
//!
//! - the [`BackgroundTasks`] extractor spawns tasks from handlers, with errors that answer
//!   `503` and `Retry-After` through `?`, and [`after_response`](BackgroundTasks::after_response)
//!   tasks that start once the response has been sent;
//! - [`serve`] runs the app like [`axum::serve()`], handing its [`TaskSupervisor`] to every
//!   request, then on SIGINT or SIGTERM flips its [`Readiness`] to `503`, drains requests
//!   within a timeout, and shuts the supervisor down, returning its [`ShutdownReport`]; a
//!   second signal aborts at once;
//! - [`BackgroundTasksLayer`] hands a supervisor to the requests under it, for an app that
//!   [`serve`] does not run (a test calling the router with `oneshot`, another server), or
//!   for routes that should spawn on another supervisor than the one `serve` has;
//! - [`tasks_dashboard`] is a read-only page of the running tasks, their counts and recent
//!   failures, updated every second, with the same data as JSON, to mount (behind your
//!   authentication) with [`Router::nest_service`](axum::Router::nest_service).
//!
//! The core's types an app needs are re-exported here, as axum re-exports axum-core's, so
//! that this crate is the only dependency an axum app needs: [`TaskSupervisor`] and its
//! [`SupervisorBuilder`], [`TaskContext`], [`TaskHandle`], [`ShutdownReport`], the errors
//! ([`SpawnError`], [`TaskError`]) and [`TaskFailure`] for `on_failure`.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, http::StatusCode, routing::post};
//! use background_tasks_axum::{
//!     BackgroundTaskError, BackgroundTasks, Readiness, TaskSupervisor, serve,
//! };
//!
//! async fn sign_up(tasks: BackgroundTasks) -> Result<StatusCode, BackgroundTaskError> {
//!     // Outlives the request; shutdown waits for it, within its budget.
//!     tasks.task("welcome-mail").spawn(async {
//!         tokio::time::sleep(Duration::from_millis(50)).await;
//!     })?;
//!     // Starts once the response has been sent.
//!     tasks.after_response(async { tracing::info!("signed up") })?;
//!     Ok(StatusCode::CREATED)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let supervisor = TaskSupervisor::builder()
//!     .shutdown_timeout(Duration::from_secs(5))
//!     .build();
//! let readiness = Readiness::new();
//! let app = Router::new()
//!     .route("/sign-up", post(sign_up))
//!     .route_service("/ready", readiness.clone());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let shutdown = async {};
//! let report = serve(listener, app, supervisor)
//!     .readiness(readiness)
//!     .drain_delay(Duration::from_secs(1))
//! #   .drain_delay(Duration::ZERO)
//! #   .shutdown_signal(shutdown)
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

mod body;
mod connection;
mod dashboard;
mod error;
mod extract;
mod future;
mod gate;
mod io;
mod layer;
mod make_service;
mod readiness;
mod serve;
mod shared;
mod signals;
mod stage;
mod sync;

pub use body::AfterResponseBody;
pub use dashboard::{
    DashboardCounters, DashboardFailure, DashboardName, DashboardRefused, DashboardReport,
    DashboardShutdown, DashboardSnapshot, DashboardTask, TasksDashboard, tasks_dashboard,
};
pub use error::BackgroundTaskError;
pub use extract::{BackgroundTaskBuilder, BackgroundTasks, MissingBackgroundTasksLayer};
pub use future::ResponseFuture;
pub use layer::{BackgroundTasksLayer, BackgroundTasksService};
pub use make_service::MakeConnectionService;
pub use readiness::Readiness;
pub use serve::{Serve, ServeError, ServeFuture, serve};

// The core's public types, so that an app needs this crate only.
pub use background_tasks::{
    Counters, FailureKind, Limit, NameCount, RecentFailure, RunningTask, ShutdownProgress,
    ShutdownReport, Snapshot, SpawnError, SupervisorBuilder, SupervisorPhase, TaskBuilder,
    TaskContext, TaskError, TaskFailure, TaskHandle, TaskId, TaskKind, TaskRecord, TaskSupervisor,
    TrackedFuture,
};

// The examples of the README and the guide, compiled as doctests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
struct GuideDoctests;
