//! The readiness endpoint a load balancer polls.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum_core::body::Body;
use axum_core::response::Response;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, StatusCode};
use tower_service::Service;

/// Whether the server takes new work: `200 ready` while serving, `503 shutting down` from the
/// moment the shutdown signal arrives, so that a load balancer stops sending traffic during the
/// drain.
///
/// It is a tower service, to mount with [`Router::route_service`](axum::Router::route_service),
/// and [`serve`](crate::serve) flips it when it is passed to
/// [`Serve::readiness`](crate::Serve::readiness). Clones share one flag.
///
/// # Examples
///
/// ```
/// use axum::Router;
/// use background_tasks::TaskSupervisor;
/// use background_tasks_axum::{Readiness, serve};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let readiness = Readiness::new();
/// let app = Router::new().route_service("/ready", readiness.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let report = serve(listener, app, TaskSupervisor::new())
///     .readiness(readiness)
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    shutting_down: Arc<AtomicBool>,
}

impl Readiness {
    /// How long a client should wait before it asks again once shutdown has begun.
    const RETRY_AFTER_SECONDS: u64 = 5;

    /// A readiness flag that answers ready.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(background_tasks_axum::Readiness::new().is_ready());
    /// ```
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns `true` until [`set_not_ready`](Self::set_not_ready) is called.
    ///
    /// # Examples
    ///
    /// ```
    /// let readiness = background_tasks_axum::Readiness::new();
    /// assert!(readiness.is_ready());
    /// ```
    #[must_use]
    pub fn is_ready(&self) -> bool {
        // Relaxed: a lone flag that publishes no other data.
        !self.shutting_down.load(Ordering::Relaxed)
    }

    /// Answers `503` from now on, on this value and every clone. Calling it again changes
    /// nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let readiness = background_tasks_axum::Readiness::new();
    /// let probe = readiness.clone();
    /// readiness.set_not_ready();
    /// readiness.set_not_ready();
    /// assert!(!probe.is_ready());
    /// ```
    pub fn set_not_ready(&self) {
        // Relaxed: as in `is_ready`.
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    fn response(&self) -> Response {
        let (status, body) = if self.is_ready() {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status != StatusCode::OK {
            headers.insert(RETRY_AFTER, HeaderValue::from(Self::RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl<B> Service<Request<B>> for Readiness {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        ready(Ok(self.response()))
    }
}
