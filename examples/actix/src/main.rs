//! The quickstart's job server on actix-web: handlers start named background jobs that outlive
//! their request, on the runtime of the actix worker that runs it, and the server shuts down
//! within one budget on SIGTERM or SIGINT (the workers stop only after the jobs have).
//!
//! ```text
//! cargo run -p example-actix
//! curl -X POST 'http://127.0.0.1:3000/jobs?duration_ms=2000&kind=async'   # 202 {"id":1}
//! curl http://127.0.0.1:3000/tasks                                          # {"running":1,...}
//! # Ctrl-C: requests drain, jobs drain, then the report is printed; a second Ctrl-C aborts.
//! ```
//!
//! Settings (environment), as the quickstart's: `PORT` (default 3000; 0 picks a free port),
//! `SHUTDOWN_TIMEOUT_MS` (5000), `CANCEL_GRACE_MS` (1000), `DRAIN_DELAY_MS` (0),
//! `REQUEST_DRAIN_TIMEOUT_MS` (10000), `MAX_TASKS` (no limit), `RUST_LOG` (info). A bad value
//! exits with code 2.

// The quickstart's settings, read the same way.
#[path = "../../quickstart/src/config.rs"]
mod config;

use std::future::IntoFuture;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use background_tasks_actix::{
    BackgroundTaskError, BackgroundTasks, BackgroundTasksMiddleware, TaskSupervisor, serve,
};
use serde::Deserialize;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use crate::config::Config;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // The runtime of `main`, which runs `serve`; each actix worker runs one of its own.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // Dropping the runtime would wait for the blocking jobs that shutdown reported as
    // abandoned: exit without them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    // No `runtime(..)`: jobs run on the worker that spawns them, as a `tokio::spawn` would, and
    // `serve` keeps the workers running until the supervisor has shut down.
    let mut builder = TaskSupervisor::builder()
        .shutdown_timeout(config.shutdown_timeout)
        .cancel_grace(config.cancel_grace);
    if let Some(jobs) = config.max_tasks {
        builder = builder.max_tasks(jobs);
    }
    // Once, shared by every worker's `App`: `serve` drains the requests it counts.
    let middleware = BackgroundTasksMiddleware::new(builder.build());
    let server = HttpServer::new({
        let middleware = middleware.clone();
        move || {
            App::new()
                .wrap(middleware.clone())
                .route("/jobs", web::post().to(post_job))
                .route("/tasks", web::get().to(get_tasks))
        }
    })
    .bind(("127.0.0.1", config.port))?;
    let address = server.addrs()[0];
    // `into_future` starts the server and installs the SIGINT and SIGTERM handlers: from the
    // moment the address is announced, a signal shuts the server down gracefully.
    let serving = serve(server, middleware)
        .drain_delay(config.drain_delay)
        .request_drain_timeout(config.request_drain_timeout)
        .into_future();

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    // Tests read this line through a pipe, where stdout is block-buffered.
    stdout.flush()?;
    drop(stdout);

    let report = serving.await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "shutdown report: {report}")?;
    stdout.flush()?;
    Ok(())
}

/// What a job does for its `duration_ms`.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    /// A tokio sleep.
    #[default]
    Async,
    /// A thread sleep on the blocking pool.
    Blocking,
    /// A sleep that stops early, cleanly, when shutdown cancels it.
    Cooperative,
}

#[derive(Debug, Deserialize)]
struct JobParams {
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    kind: Kind,
}

/// `POST /jobs?duration_ms=N&kind=K`: 202 `{"id": n}`, 400 on bad parameters (actix's `Query`
/// rejection), 503 with `Retry-After` while shutting down or at capacity.
async fn post_job(
    tasks: BackgroundTasks,
    params: web::Query<JobParams>,
) -> Result<HttpResponse, BackgroundTaskError> {
    let JobParams { duration_ms, kind } = params.into_inner();
    let duration = Duration::from_millis(duration_ms);
    let id = match kind {
        Kind::Async => tasks
            .task("async-job")
            .spawn(async move { tokio::time::sleep(duration).await })?
            .id(),
        Kind::Blocking => tasks
            .task("blocking-job")
            .spawn_blocking(move || std::thread::sleep(duration))?
            .id(),
        Kind::Cooperative => tasks
            .task("cooperative-job")
            .spawn_with(move |ctx| async move {
                tokio::select! {
                    () = ctx.cancelled() => tracing::info!("cooperative job cancelled"),
                    () = tokio::time::sleep(duration) => {}
                }
            })?
            .id(),
    };
    Ok(HttpResponse::Accepted().json(json!({ "id": id.as_u64() })))
}

/// `GET /tasks`: 200 `{"running": n, "shutting_down": bool}`.
async fn get_tasks(tasks: BackgroundTasks) -> HttpResponse {
    let supervisor = tasks.supervisor();
    HttpResponse::Ok().json(json!({
        "running": supervisor.len(),
        "shutting_down": supervisor.is_shutting_down(),
    }))
}
