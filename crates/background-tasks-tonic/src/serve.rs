//! Serving tonic services with one shutdown budget.

use axum::serve::Listener;
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTasksLayer, Serve};
use tonic::service::Routes;

/// Serves the gRPC services of `routes` on `listener` (HTTP/2, and HTTP/1 for gRPC-Web
/// proxies) with [`BackgroundTasksLayer`] in front of them, and shuts down within one budget:
/// `background_tasks_axum::serve`'s lifecycle, whose [`Serve`] builder it returns.
///
/// On the shutdown signal (by default SIGINT or SIGTERM), the listener closes after the
/// optional [`drain_delay`](Serve::drain_delay); each HTTP/2 connection is told to finish its
/// streams in flight (a GOAWAY) and close, within
/// [`request_drain_timeout`](Serve::request_drain_timeout); then the supervisor shuts down
/// and its [`ShutdownReport`](crate::ShutdownReport) is returned. A second signal aborts at
/// once.
///
/// It stands in for tonic's `Server::builder().add_service(...).serve_with_shutdown(...)`,
/// which waits for its connections without a bound. To keep tonic's `Server` (for its own
/// settings), put the layer on it and shut the supervisor down after `serve_with_shutdown`
/// returns, as the guide shows.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks_tonic::{TaskSupervisor, serve};
/// use tonic::service::Routes;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::new();
/// let routes = Routes::default(); // `Routes::new(JobsServer::new(service))`
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let report = serve(listener, routes, supervisor)
///     .request_drain_timeout(Duration::from_secs(10))
/// #   .shutdown_signal(async {})
///     .await?;
/// assert!(report.is_clean());
/// # Ok(())
/// # }
/// ```
pub fn serve<L>(listener: L, routes: Routes, supervisor: TaskSupervisor) -> Serve<L>
where
    L: Listener,
{
    let router = routes
        .prepare()
        .into_axum_router()
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    background_tasks_axum::serve(listener, router, supervisor)
}
