//! What `serve` can serve: the service of each connection, made from what the app hands over.

use std::convert::Infallible;
use std::future::{Future, poll_fn, ready};

use axum::Router;
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected, IntoMakeServiceWithConnectInfo};
use axum::middleware::AddExtension;
use axum::response::Response;
use axum::routing::{IntoMakeService, MethodRouter};
use tower_service::Service;

/// Makes the service of each connection [`serve`](crate::serve()) accepts, from the remote
/// address of the connection (`A`, the listener's [`Addr`](axum::serve::Listener::Addr)).
///
/// It is what `axum::serve` takes, where this crate can take it:
///
/// - a [`Router`], once its state is given with [`Router::with_state`], and a
///   [`MethodRouter`] the same way;
/// - [`Router::into_make_service`], and the `into_make_service` of a handler
///   ([`HandlerWithoutStateExt`](axum::handler::HandlerWithoutStateExt)) or of any tower
///   service ([`axum::ServiceExt::into_make_service`]);
/// - [`Router::into_make_service_with_connect_info`], so that the
///   [`ConnectInfo`](axum::extract::ConnectInfo) extractor works: with
///   `::<SocketAddr>()` on a [`TcpListener`](tokio::net::TcpListener), or any type
///   implementing [`Connected`] for the listener's address.
///
/// A make-service of your own that `axum::serve` would take, a `Service` of
/// [`IncomingStream`](axum::serve::IncomingStream), cannot be called from outside axum, which
/// alone can build an `IncomingStream`: implement this trait for it instead, or make the
/// information it needs a [`Connected`] of the address.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use axum::{Router, extract::ConnectInfo, routing::get};
/// use background_tasks_axum::{BackgroundTasksLayer, TaskSupervisor, serve};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let supervisor = TaskSupervisor::new();
/// let app = Router::new()
///     .route("/", get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
///         format!("hello, {peer}")
///     }))
///     .layer(BackgroundTasksLayer::new(supervisor.clone()));
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let report = serve(
///     listener,
///     app.into_make_service_with_connect_info::<SocketAddr>(),
///     supervisor,
/// )
/// #   .shutdown_signal(async {})
///     .await?;
/// # Ok(())
/// # }
/// ```
pub trait MakeConnectionService<A>: Send + 'static {
    /// The service that answers the requests of one connection.
    type Service: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static;

    /// Makes the service of the connection from `remote_addr`.
    fn make_service(&mut self, remote_addr: A) -> impl Future<Output = Self::Service> + Send;
}

impl<A> MakeConnectionService<A> for Router {
    type Service = Self;

    #[inline]
    fn make_service(&mut self, _remote_addr: A) -> impl Future<Output = Self> + Send {
        ready(self.clone())
    }
}

impl<A> MakeConnectionService<A> for MethodRouter {
    type Service = Self;

    #[inline]
    fn make_service(&mut self, _remote_addr: A) -> impl Future<Output = Self> + Send {
        ready(self.clone())
    }
}

impl<A, S> MakeConnectionService<A> for IntoMakeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
{
    type Service = S;

    #[inline]
    fn make_service(&mut self, _remote_addr: A) -> impl Future<Output = S> + Send {
        // It ignores its target: `()` spares `A` a `Send` bound.
        call(self, ())
    }
}

impl<A, S, C> MakeConnectionService<A> for IntoMakeServiceWithConnectInfo<S, C>
where
    A: Send + 'static,
    S: Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static,
    C: Connected<A> + Clone + Send + Sync + 'static,
{
    type Service = AddExtension<S, ConnectInfo<C>>;

    #[inline]
    fn make_service(&mut self, remote_addr: A) -> impl Future<Output = Self::Service> + Send {
        call(self, remote_addr)
    }
}

/// Calls a make-service that cannot fail, once it is ready, as `axum::serve` does.
async fn call<M, T>(make_service: &mut M, target: T) -> M::Response
where
    M: Service<T, Error = Infallible>,
{
    let Ok(()) = poll_fn(|cx| make_service.poll_ready(cx)).await;
    let Ok(service) = make_service.call(target).await;
    service
}
