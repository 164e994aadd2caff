//! The middleware and the extractor, through actix's test service: spawning, 503s, the
//! missing-middleware 500, after-response tasks and the count of requests in flight.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::RETRY_AFTER;
use actix_web::{App, FromRequest, HttpRequest, HttpResponse, test, web};
use background_tasks_actix::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksMiddleware, SpawnError, TaskSupervisor,
};

async fn spawn_job(tasks: BackgroundTasks) -> Result<HttpResponse, BackgroundTaskError> {
    // Ends when the shutdown begins: counted as completed in its drain, whatever the timing.
    let handle = tasks
        .task("job")
        .spawn_with(|ctx| async move { ctx.shutdown_started().await })?;
    Ok(HttpResponse::Accepted().body(handle.id().to_string()))
}

fn app(
    supervisor: TaskSupervisor,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(BackgroundTasksMiddleware::new(supervisor))
        .route("/jobs", web::post().to(spawn_job))
}

#[actix_web::test]
async fn a_handler_spawns_a_supervised_task_that_shutdown_waits_for() {
    let supervisor = TaskSupervisor::new();
    let service = test::init_service(app(supervisor.clone())).await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/jobs").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 1, "{report}");
}

#[actix_web::test]
async fn a_spawn_at_capacity_answers_503_with_retry_after_one_second() {
    let supervisor = TaskSupervisor::builder().max_tasks(1).build();
    supervisor.spawn(std::future::pending::<()>()).unwrap();
    let service = test::init_service(app(supervisor.clone())).await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/jobs").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "1");
    let body = test::read_body(response).await;
    assert_eq!(body, SpawnError::AtCapacity { limit: 1 }.to_string());
    supervisor.shutdown_now().await;
}

#[actix_web::test]
async fn a_spawn_while_shutting_down_answers_503_with_retry_after_five_seconds() {
    let supervisor = TaskSupervisor::new();
    supervisor.shutdown().await;
    let service = test::init_service(app(supervisor.clone())).await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/jobs").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers().get(RETRY_AFTER).unwrap(), "5");
    let body = test::read_body(response).await;
    assert_eq!(body, SpawnError::ShuttingDown.to_string());
}

#[actix_web::test]
async fn without_the_middleware_the_extractor_answers_500_saying_how_to_register_it() {
    let service = test::init_service(App::new().route("/jobs", web::post().to(spawn_job))).await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/jobs").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = test::read_body(response).await;
    let body = std::str::from_utf8(&body).unwrap();
    assert!(
        body.contains(".wrap(BackgroundTasksMiddleware::new(supervisor.clone()))"),
        "{body}"
    );
}

#[actix_web::test]
async fn an_optional_extractor_is_none_without_the_middleware() {
    let service = test::init_service(App::new().route(
        "/",
        web::get().to(|tasks: Option<BackgroundTasks>| async move {
            if tasks.is_some() { "some" } else { "none" }
        }),
    ))
    .await;
    let body = test::call_and_read_body(&service, test::TestRequest::get().to_request()).await;
    assert_eq!(body, "none");
}

/// A handler that schedules an after-response task which sets `ran`.
fn after_response_app(
    supervisor: TaskSupervisor,
    ran: Arc<AtomicBool>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .wrap(BackgroundTasksMiddleware::new(supervisor))
        .route(
            "/",
            web::get().to(move |tasks: BackgroundTasks| {
                let ran = ran.clone();
                async move {
                    tasks.task("after").after_response(async move {
                        ran.store(true, Ordering::SeqCst);
                    })?;
                    Ok::<_, BackgroundTaskError>(HttpResponse::Ok().body("a body"))
                }
            }),
        )
}

#[actix_web::test]
async fn an_after_response_task_starts_only_once_the_body_has_been_sent() {
    let supervisor = TaskSupervisor::new();
    let ran = Arc::new(AtomicBool::new(false));
    let service = test::init_service(after_response_app(supervisor.clone(), ran.clone())).await;
    let response = test::call_service(&service, test::TestRequest::get().to_request()).await;

    // The task exists (shutdown would wait for it) but waits for the body.
    assert_eq!(supervisor.len(), 1);
    assert_runs_once_the_body_is_sent(response, &supervisor, &ran, "the task").await;
}

/// Checks that the after-response task of `response`'s request waits for its body (`ran`
/// stays false), then reads the body, and checks that the task ran.
async fn assert_runs_once_the_body_is_sent(
    response: actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    supervisor: &TaskSupervisor,
    ran: &AtomicBool,
    task: &str,
) {
    let waited = tokio::time::timeout(Duration::from_millis(200), supervisor.wait_idle()).await;
    assert!(waited.is_err(), "{task} ran before its body was sent");
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(test::read_body(response).await, "a body");
    tokio::time::timeout(Duration::from_secs(5), supervisor.wait_idle())
        .await
        .expect("the task ran once the body was sent");
    assert!(ran.load(Ordering::SeqCst));
}

#[actix_web::test]
async fn the_next_request_s_after_response_task_waits_for_its_own_body() {
    // The worker reuses a request's gate for the next one once nothing holds it: it must be
    // closed again by then.
    let supervisor = TaskSupervisor::new();
    let ran = Arc::new(AtomicBool::new(false));
    let service = test::init_service(after_response_app(supervisor.clone(), ran.clone())).await;
    for request in 0..3 {
        ran.store(false, Ordering::SeqCst);
        let response = test::call_service(&service, test::TestRequest::get().to_request()).await;
        let task = format!("request {request}'s task");
        assert_runs_once_the_body_is_sent(response, &supervisor, &ran, &task).await;
    }
}

#[actix_web::test]
async fn an_after_response_task_starts_when_the_response_is_dropped_unsent() {
    let supervisor = TaskSupervisor::new();
    let ran = Arc::new(AtomicBool::new(false));
    let service = test::init_service(after_response_app(supervisor.clone(), ran.clone())).await;
    let response = test::call_service(&service, test::TestRequest::get().to_request()).await;
    drop(response);
    tokio::time::timeout(Duration::from_secs(5), supervisor.wait_idle())
        .await
        .expect("the task ran once the response was dropped");
    assert!(ran.load(Ordering::SeqCst));
}

#[actix_web::test]
async fn an_after_response_task_whose_response_is_never_sent_ends_without_running_at_cancel() {
    let supervisor = TaskSupervisor::builder()
        .shutdown_timeout(Duration::ZERO)
        .cancel_grace(Duration::from_secs(5))
        .build();
    let ran = Arc::new(AtomicBool::new(false));
    let service = test::init_service(after_response_app(supervisor.clone(), ran.clone())).await;
    let response = test::call_service(&service, test::TestRequest::get().to_request()).await;
    let report = supervisor.shutdown().await;
    assert_eq!(report.cancelled(), 1, "{report}");
    assert!(!ran.load(Ordering::SeqCst));
    drop(response);
}

#[actix_web::test]
async fn the_extractor_outside_of_a_request_runs_after_response_tasks_at_once() {
    let supervisor = TaskSupervisor::new();
    let ran = Arc::new(AtomicBool::new(false));
    let tasks = BackgroundTasks::new(supervisor.clone());
    let flag = ran.clone();
    tasks
        .after_response(async move { flag.store(true, Ordering::SeqCst) })
        .unwrap();
    assert_eq!(supervisor.shutdown().await.completed(), 1);
    assert!(ran.load(Ordering::SeqCst));
}

#[actix_web::test]
async fn a_handler_spawns_a_not_send_task_on_its_worker_and_shutdown_drains_it() {
    let supervisor = TaskSupervisor::new();
    let finished = Arc::new(AtomicBool::new(false));
    let service = test::init_service(
        App::new()
            .wrap(BackgroundTasksMiddleware::new(supervisor.clone()))
            .app_data(web::Data::new(finished.clone()))
            .route(
                "/local",
                web::post().to(
                    |tasks: BackgroundTasks, finished: web::Data<Arc<AtomicBool>>| async move {
                        let session = std::rc::Rc::new(finished.get_ref().clone()); // not `Send`
                        tasks
                            .task("touch-session")
                            .spawn_local_with(|ctx| async move {
                                ctx.shutdown_started().await;
                                session.store(true, Ordering::SeqCst);
                            })?;
                        Ok::<_, BackgroundTaskError>(HttpResponse::Accepted().finish())
                    },
                ),
            ),
    )
    .await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/local").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(supervisor.len(), 1);
    // This test runs on the worker's `LocalSet`, as the handler did: drained while it runs.
    let report = supervisor.shutdown().await;
    assert_eq!(report.completed(), 1, "{report}");
    assert!(finished.load(Ordering::SeqCst));
}

#[actix_web::test]
async fn a_handler_s_tracked_future_counts_while_the_handler_awaits_it() {
    let supervisor = TaskSupervisor::new();
    let service = test::init_service(
        App::new()
            .wrap(BackgroundTasksMiddleware::new(supervisor.clone()))
            .route(
                "/save",
                web::post().to(|tasks: BackgroundTasks| async move {
                    let running = tasks.supervisor().clone();
                    let saved = tasks.task("save-order").track_future(async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        running.len()
                    })?;
                    Ok::<_, BackgroundTaskError>(HttpResponse::Ok().body(saved.await.to_string()))
                }),
            ),
    )
    .await;
    let response = test::call_service(
        &service,
        test::TestRequest::post().uri("/save").to_request(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(test::read_body(response).await, "1", "counted while it ran");
    assert!(supervisor.is_empty());
    supervisor.shutdown().await;
    let refused = test::call_service(
        &service,
        test::TestRequest::post().uri("/save").to_request(),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[actix_web::test]
async fn a_request_is_in_flight_until_its_body_has_been_sent_or_dropped() {
    let middleware = BackgroundTasksMiddleware::new(TaskSupervisor::new());
    let service = test::init_service(
        App::new()
            .wrap(middleware.clone())
            .route("/", web::get().to(|| async { "a body" })),
    )
    .await;
    assert_eq!(middleware.requests_in_flight(), 0);
    let response = test::call_service(&service, test::TestRequest::get().to_request()).await;
    assert_eq!(
        middleware.requests_in_flight(),
        1,
        "its body is still to send"
    );
    assert_eq!(test::read_body(response).await, "a body");
    assert_eq!(middleware.requests_in_flight(), 0);

    let response = test::call_service(&service, test::TestRequest::get().to_request()).await;
    assert_eq!(middleware.requests_in_flight(), 1);
    drop(response);
    assert_eq!(
        middleware.requests_in_flight(),
        0,
        "a dropped response ends it"
    );
}

#[actix_web::test]
async fn an_extractor_taken_from_a_clone_of_the_request_after_its_handler_waits_for_its_body() {
    // A worker reuses what the extractor reads for its next request once no request holds it:
    // a clone of a request must keep that request's gate, even once other requests have run.
    let supervisor = TaskSupervisor::new();
    let kept = Rc::new(RefCell::new(None::<HttpRequest>));
    let (first_ran, second_ran) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let service = test::init_service(
        App::new()
            .wrap(BackgroundTasksMiddleware::new(supervisor.clone()))
            .route(
                "/keep",
                web::get().to({
                    let kept = kept.clone();
                    move |request: HttpRequest| {
                        kept.replace(Some(request));
                        async { HttpResponse::Ok().body("a body") }
                    }
                }),
            )
            .route(
                "/",
                web::get().to({
                    let ran = second_ran.clone();
                    move |tasks: BackgroundTasks| {
                        let ran = ran.clone();
                        async move {
                            tasks
                                .after_response(async move { ran.store(true, Ordering::SeqCst) })?;
                            Ok::<_, BackgroundTaskError>(HttpResponse::Ok().body("a body"))
                        }
                    }
                }),
            ),
    )
    .await;
    let first =
        test::call_service(&service, test::TestRequest::get().uri("/keep").to_request()).await;
    // Only the handler's clone holds the first request now; its body is still to send.
    let first_body = first.into_body();
    let second = test::call_service(&service, test::TestRequest::get().to_request()).await;
    assert_runs_once_the_body_is_sent(
        second,
        &supervisor,
        &second_ran,
        "the second request's task",
    )
    .await;

    let request = kept.take().expect("the handler kept its request");
    let tasks = BackgroundTasks::extract(&request).await.unwrap();
    let flag = first_ran.clone();
    tasks
        .after_response(async move { flag.store(true, Ordering::SeqCst) })
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(200), supervisor.wait_idle()).await;
    assert!(
        waited.is_err(),
        "the first request's task ran before its body was sent"
    );
    assert_eq!(
        actix_web::body::to_bytes(first_body).await.ok().unwrap(),
        "a body"
    );
    tokio::time::timeout(Duration::from_secs(5), supervisor.wait_idle())
        .await
        .expect("the task ran once the first body was sent");
    assert!(first_ran.load(Ordering::SeqCst));
}
