//! `serve`'s whole shutdown is bounded by the sum of its budgets, whatever handlers and tasks
//! do: a request that never finishes, a task that ignores cancellation and a blocking task
//! that outlives everything (neither with a context: the grace is not theirs). Real socket,
//! real client, real time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer, serve};
use background_tasks_e2e::{client, eventually};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_sum_of_the_budgets_whatever_handlers_and_tasks_do() {
    let drain_delay = Duration::from_millis(300);
    let request_drain_timeout = Duration::from_millis(400);
    let shutdown_timeout = Duration::from_millis(400);
    // Neither task has a context, so neither can see the cancellation signal: the shutdown
    // does not wait the grace for them, however long it is.
    let cancel_grace = Duration::from_secs(3);
    let budget = drain_delay + request_drain_timeout + shutdown_timeout;

    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(shutdown_timeout)
        .cancel_grace(cancel_grace)
        .build();
    // The blocking task holds its thread until the test drops `release`, after the report:
    // the runtime's drop waits for blocking threads.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(Mutex::new(released));
    let hang_entered = Arc::new(Notify::new());
    let hung = hang_entered.clone();
    let app = Router::new()
        .route(
            "/stuck-task",
            post(|tasks: BackgroundTasks| async move {
                // Ignores both the shutdown and the cancellation signal: aborted.
                tasks.task("stuck").spawn(std::future::pending::<()>())?;
                // A thread sleep nothing can stop: abandoned.
                tasks.task("sleepy").spawn_blocking(move || {
                    let released = released.lock().expect("the receiver's lock");
                    let _ = released.recv_timeout(Duration::from_secs(20));
                })?;
                Ok::<_, BackgroundTaskError>(StatusCode::ACCEPTED)
            }),
        )
        // A request that never finishes: closed after the request drain timeout.
        .route(
            "/hang",
            get(move || async move {
                hung.notify_one();
                std::future::pending::<()>().await;
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(listener, app, supervisor.clone())
            .drain_delay(drain_delay)
            .request_drain_timeout(request_drain_timeout)
            .shutdown_signal(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let client = client();
    let response = client
        .post(format!("{base}/stuck-task"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let hanging = tokio::spawn(client.get(format!("{base}/hang")).send());
    hang_entered.notified().await;
    eventually("both tasks to run", Duration::from_secs(5), || async {
        (supervisor.len() == 2).then_some(())
    })
    .await;

    let signalled = Instant::now();
    stop.send(()).unwrap();
    let report = tokio::time::timeout(budget + Duration::from_secs(2), server)
        .await
        .expect("serve returns within its budgets")
        .unwrap()
        .unwrap();
    let elapsed = signalled.elapsed();

    // Every budget ran out in turn, and nothing more.
    assert!(
        elapsed >= budget,
        "returned after {elapsed:?}, before the budgets ran out"
    );
    assert!(
        elapsed < budget + Duration::from_millis(1000),
        "returned after {elapsed:?}, budgets {budget:?}"
    );
    assert_eq!(report.aborted(), 1, "{report}");
    assert_eq!(report.abandoned(), 1, "{report}");
    assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"));
    assert_eq!(report.abandoned_tasks()[0].name(), Some("sleepy"));
    // The hanging request's connection was closed, not left open.
    let hanging = tokio::time::timeout(Duration::from_secs(2), hanging)
        .await
        .expect("the hanging request ends with the server")
        .unwrap();
    assert!(hanging.is_err(), "the hanging request got {hanging:?}");
    drop(release);
}
