//! actix-web integration for [`background_tasks`]: spawn supervised background tasks from
//! handlers, run work after the response has been sent, and run an `HttpServer` with one
//! shutdown budget that covers its requests and its tasks.
//!
//! - [`BackgroundTasksMiddleware`] registers a [`TaskSupervisor`] with an `App`;
//! - the [`BackgroundTasks`] extractor spawns tasks from handlers, with errors that answer
//!   `503` and `Retry-After` through `?`, and [`after_response`](BackgroundTasks::after_response)
//!   tasks that start once the response has been sent;
//! - [`serve`] runs the `HttpServer`, then on SIGINT or SIGTERM drains its requests and shuts
//!   the supervisor down, returning its [`ShutdownReport`]; a second signal aborts at once.
//!
//! # Where tasks run, and what shutdown does to them
//!
//! A task spawned from a handler runs on the runtime of the actix worker that runs the
//! request (each worker has a single-thread runtime of its own), as a `tokio::spawn` there
//! would: it costs no crossing to another thread. [`serve`] keeps the workers running until
//! the supervisor has shut down: it stops accepting, drains the requests in flight, then shuts
//! the supervisor down (its tasks, on whatever runtime, drain, are cancelled and aborted, and
//! are in the report), and only then stops the workers. Tasks spawned outside a worker (in
//! `main`, at startup) run where they were spawned. A supervisor built with a
//! [`runtime`](SupervisorBuilder::runtime) spawns every task there instead, handlers'
//! included: that costs a wake of that runtime per task, and is only needed to keep tasks
//! alive past workers that stop without `serve`. The core types an app needs are
//! re-exported, so this crate is the only dependency it needs.
//!
//! ```
//! use std::time::Duration;
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use background_tasks_actix::{
//!     BackgroundTaskError, BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor, serve,
//! };
//!
//! async fn sign_up(tasks: BackgroundTasks) -> Result<HttpResponse, BackgroundTaskError> {
//!     // Outlives the request; shutdown waits for it, within its budget.
//!     tasks.task("welcome-mail").spawn(async {
//!         tokio::time::sleep(Duration::from_millis(50)).await;
//!     })?;
//!     // Starts once the response has been sent.
//!     tasks.after_response(async { tracing::info!("signed up") })?;
//!     Ok(HttpResponse::Created().finish())
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let supervisor = TaskSupervisor::builder()
//!     .shutdown_timeout(Duration::from_secs(5))
//!     .build();
//! // Once, outside the closure: `serve` counts the requests in flight through it.
//! let middleware = BackgroundTasksMiddleware::new(supervisor);
//! let server = HttpServer::new({
//!     let middleware = middleware.clone();
//!     move || {
//!         App::new()
//!             .wrap(middleware.clone())
//!             .route("/sign-up", web::post().to(sign_up))
//!     }
//! })
//! .bind(("127.0.0.1", 0))?;
//!
//! # let shutdown = async {};
//! let report = serve(server, middleware)
//!     .request_drain_timeout(Duration::from_secs(10))
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
mod error;
mod extract;
mod gate;
mod in_flight;
mod middleware;
mod request_data;
mod serve;
mod signals;

pub use body::AfterResponseBody;
pub use error::{BackgroundTaskError, MissingBackgroundTasksMiddleware};
pub use extract::{BackgroundTaskBuilder, BackgroundTasks};
pub use middleware::{BackgroundTasksMiddleware, BackgroundTasksService, ResponseFuture};
pub use serve::{Serve, ServeError, ServeFuture, serve};

/// The core's types, so that an actix app needs this crate only.
pub use background_tasks::{
    Limit, ShutdownReport, SpawnError, SupervisorBuilder, TaskContext, TaskError, TaskFailure,
    TaskHandle, TaskId, TaskRecord, TaskSupervisor, TrackedFuture,
};
