//! What `serve` does with a WebSocket (actix-ws) at the shutdown, over real TCP with a real
//! WebSocket client. Under the middleware, a WebSocket is a request in flight until its
//! response body (the socket) ends, so the request drain waits for it, and after the drain
//! timeout and the supervisor's shutdown it is dropped with the worker and the worker's
//! runtime, together with the session loop spawned there. Nothing of it outlives `serve`, and
//! the client gets no Close frame.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use background_tasks_actix::{BackgroundTasksMiddleware, TaskSupervisor, serve};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// Sets its flag when dropped: tells whether the session loop is gone.
struct DroppedFlag(Arc<AtomicBool>);

impl Drop for DroppedFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// `/ws`: actix-ws's pattern, a session loop spawned on the worker's runtime that says
/// `ready`, then reads until the socket ends.
async fn websocket(
    request: HttpRequest,
    body: web::Payload,
    dropped: web::Data<Arc<AtomicBool>>,
) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut messages) = actix_ws::handle(&request, body)?;
    let flag = DroppedFlag(Arc::clone(&dropped));
    actix_web::rt::spawn(async move {
        let _flag = flag;
        if session.text("ready").await.is_err() {
            return;
        }
        while let Some(Ok(_)) = messages.next().await {}
    });
    Ok(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_dropped_with_its_worker_at_the_request_drain_timeout_and_does_not_outlive_serve()
 {
    let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    let for_app = middleware.clone();
    let dropped = Arc::new(AtomicBool::new(false));
    let data = web::Data::new(Arc::clone(&dropped));
    let server = HttpServer::new(move || {
        App::new()
            .wrap(for_app.clone())
            .app_data(data.clone())
            .route("/ws", web::get().to(websocket))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("a free port on the loopback");
    let address = server.addrs()[0];
    let (shutdown, shutdown_signal) = oneshot::channel::<()>();
    let drain = Duration::from_secs(1);
    let server = tokio::spawn(
        serve(server, middleware)
            .request_drain_timeout(drain)
            .shutdown_signal(async move {
                let _ = shutdown_signal.await;
            })
            .into_future(),
    );

    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{address}/ws"))
        .await
        .expect("the upgrade succeeds");
    let ready = client.next().await.expect("a message").expect("no error");
    assert_eq!(ready, Message::text("ready"));

    let signalled = Instant::now();
    let _ = shutdown.send(());
    let report = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    let elapsed = signalled.elapsed();
    assert!(report.is_clean(), "{report}");
    assert!(
        elapsed >= drain,
        "the drain waited for the WebSocket until the request drain timeout: {elapsed:?}"
    );
    assert!(
        elapsed < drain + Duration::from_secs(3),
        "then dropped it: {elapsed:?}"
    );
    // The worker's runtime drops its tasks as its thread ends, just after the worker reports.
    let waited = Instant::now();
    while !dropped.load(Ordering::SeqCst) {
        assert!(
            waited.elapsed() < Duration::from_secs(2),
            "the session loop died with the worker's runtime"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), client.next())
        .await
        .expect("the client sees its connection end");
    assert!(
        !matches!(ended, Some(Ok(Message::Close(_) | Message::Text(_)))),
        "no Close frame, only the end: {ended:?}"
    );
}
