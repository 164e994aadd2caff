//! After-response tasks: when they start, how they run, and how shutdown treats them.

mod support;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use background_tasks::TaskSupervisor;
use background_tasks_axum::{BackgroundTaskError, BackgroundTasks, BackgroundTasksLayer};
use bytes::Bytes;
use http_body::Body as _;
use tokio::sync::{Barrier, mpsc};
use tokio::time::{Instant, sleep};
use tower::ServiceExt;

use support::{Logs, channel_body, request};

/// A flag that an after-response task sets.
#[derive(Clone, Default)]
struct Flag(Arc<AtomicBool>);

impl Flag {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// `true`: hides the handler's panic from the type checker, which wants a response type.
fn flag_never_set() -> bool {
    false
}

/// Lets spawned tasks run: paused time advances only once every task is idle.
async fn settle() {
    sleep(Duration::from_millis(1)).await;
}

/// An app whose `/` schedules an after-response task that sets `flag`, and answers `body`.
fn app_setting(supervisor: &TaskSupervisor, flag: &Flag, body: fn() -> Body) -> Router {
    let flag = flag.clone();
    Router::new()
        .route(
            "/",
            get(move |tasks: BackgroundTasks| async move {
                tasks.after_response(async move { flag.set() })?;
                Ok::<_, BackgroundTaskError>(body())
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()))
}

#[tokio::test(start_paused = true)]
async fn after_response_starts_only_once_the_body_has_been_fully_sent() {
    let supervisor = TaskSupervisor::new();
    let flag = Flag::default();
    let (frames, body) = channel_body();
    let body = Arc::new(std::sync::Mutex::new(Some(body)));
    let app = {
        let flag = flag.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| {
                    let body = body.lock().unwrap().take().unwrap();
                    async move {
                        tasks.after_response(async move { flag.set() }).unwrap();
                        Body::new(body)
                    }
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    let response = app.oneshot(request("GET", "/")).await.unwrap();
    settle().await;
    assert!(
        !flag.is_set(),
        "not while the headers are out but the body is not"
    );

    let mut body = response.into_body();
    frames.send(Bytes::from_static(b"first")).unwrap();
    let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "first");
    settle().await;
    assert!(!flag.is_set(), "not while the body is being sent");

    drop(frames);
    let end = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
    assert!(end.is_none());
    settle().await;
    assert!(
        flag.is_set(),
        "once the last frame has been taken, with the body still held"
    );
    drop(body);
}

#[tokio::test(start_paused = true)]
async fn after_response_starts_when_the_body_is_dropped_unsent() {
    let supervisor = TaskSupervisor::new();
    let flag = Flag::default();
    let app = app_setting(&supervisor, &flag, || Body::from("hello"));
    let response = app.oneshot(request("GET", "/")).await.unwrap();
    settle().await;
    assert!(!flag.is_set());
    drop(response);
    settle().await;
    assert!(flag.is_set());
}

#[tokio::test(start_paused = true)]
async fn after_response_starts_when_the_request_is_dropped_before_its_response() {
    let supervisor = TaskSupervisor::new();
    let flag = Flag::default();
    let app = {
        let flag = flag.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| async move {
                    tasks.after_response(async move { flag.set() }).unwrap();
                    std::future::pending::<()>().await;
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    // The client goes away: the server drops the request future.
    let gone = tokio::time::timeout(Duration::from_secs(1), app.oneshot(request("GET", "/"))).await;
    assert!(gone.is_err());
    settle().await;
    assert!(flag.is_set());
}

#[tokio::test(start_paused = true)]
async fn after_response_starts_when_the_handler_panics() {
    let supervisor = TaskSupervisor::new();
    let flag = Flag::default();
    let app = {
        let flag = flag.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| async move {
                    tasks.after_response(async move { flag.set() }).unwrap();
                    if !flag_never_set() {
                        panic!("handler bug");
                    }
                    "unreachable"
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    let request = tokio::spawn(app.oneshot(request("GET", "/")));
    assert!(request.await.unwrap_err().is_panic());
    settle().await;
    assert!(flag.is_set());
}

#[tokio::test(start_paused = true)]
async fn each_call_spawns_one_supervised_task_at_once() {
    let supervisor = TaskSupervisor::new();
    let counted = Arc::new(AtomicUsize::new(0));
    let app = {
        let counted = counted.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| async move {
                    let before = tasks.supervisor().len();
                    tasks.after_response(async {}).unwrap();
                    tasks.task("second").after_response(async {}).unwrap();
                    counted.store(tasks.supervisor().len() - before, Ordering::SeqCst);
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    let response = app.oneshot(request("GET", "/")).await.unwrap();
    assert_eq!(
        counted.load(Ordering::SeqCst),
        2,
        "tracked from the call on"
    );
    assert_eq!(supervisor.len(), 2, "still waiting for the response");
    drop(response);
    supervisor.wait_idle().await;
}

#[tokio::test(start_paused = true)]
async fn after_response_tasks_run_concurrently_and_one_panicking_does_not_stop_the_others() {
    let supervisor = TaskSupervisor::new();
    let finished = Arc::new(AtomicUsize::new(0));
    // Only tasks that run at the same time get past a barrier for all of them.
    let barrier = Arc::new(Barrier::new(3));
    let app = {
        let finished = finished.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| async move {
                    tasks
                        .task("panics")
                        .after_response(async { panic!("first task fails") })
                        .unwrap();
                    for _ in 0..3 {
                        let (barrier, finished) = (barrier.clone(), finished.clone());
                        tasks
                            .after_response(async move {
                                barrier.wait().await;
                                finished.fetch_add(1, Ordering::SeqCst);
                            })
                            .unwrap();
                    }
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    drop(app.oneshot(request("GET", "/")).await.unwrap());
    tokio::time::timeout(Duration::from_secs(5), supervisor.wait_idle())
        .await
        .expect("the tasks do not wait for each other");
    assert_eq!(finished.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_after_response_tasks() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(10))
        .build();
    let flag = Flag::default();
    let app = {
        let flag = flag.clone();
        Router::new()
            .route(
                "/",
                get(move |tasks: BackgroundTasks| async move {
                    tasks
                        .after_response(async move {
                            sleep(Duration::from_secs(2)).await;
                            flag.set();
                        })
                        .unwrap();
                }),
            )
            .layer(BackgroundTasksLayer::new(supervisor.clone()))
    };
    drop(app.oneshot(request("GET", "/")).await.unwrap());
    let started = Instant::now();
    let report = supervisor.shutdown().await;
    assert!(flag.is_set());
    assert_eq!(report.completed(), 1);
    assert!(report.is_clean());
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_task_whose_response_is_never_sent_ends_at_the_cancel_phase_with_a_warning() {
    let logs = Logs::capture();
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::from_secs(1))
        .cancel_grace(Duration::from_secs(1))
        .build();
    let flag = Flag::default();
    let app = app_setting(&supervisor, &flag, Body::empty);
    let response = app.oneshot(request("GET", "/")).await.unwrap();

    let report = supervisor.shutdown().await;
    assert!(!flag.is_set(), "the work never runs");
    assert_eq!(report.cancelled(), 1);
    assert_eq!(
        report.elapsed(),
        Duration::from_secs(1),
        "it ends at the cancel signal"
    );
    let logs = logs.contents();
    assert!(
        logs.contains("WARN")
            && logs.contains("after-response task")
            && logs.contains("did not run"),
        "{logs}"
    );
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn after_response_called_once_the_response_is_gone_runs_at_once() {
    let supervisor = TaskSupervisor::new();
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/",
            get(move |tasks: BackgroundTasks| async move {
                sender.send(tasks).unwrap();
            }),
        )
        .layer(BackgroundTasksLayer::new(supervisor.clone()));
    drop(app.oneshot(request("GET", "/")).await.unwrap());
    let tasks = receiver.recv().await.unwrap();

    let flag = Flag::default();
    tasks
        .after_response({
            let flag = flag.clone();
            async move { flag.set() }
        })
        .unwrap();
    settle().await;
    assert!(flag.is_set());
}

#[tokio::test(start_paused = true)]
async fn outside_a_request_after_response_runs_at_once() {
    let supervisor = TaskSupervisor::new();
    let flag = Flag::default();
    let tasks = BackgroundTasks::new(supervisor.clone());
    tasks
        .after_response({
            let flag = flag.clone();
            async move { flag.set() }
        })
        .unwrap();
    supervisor.wait_idle().await;
    assert!(flag.is_set());
}
