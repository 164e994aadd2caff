//! The baseline of the actix HTTP benchmark: `examples/actix`'s `POST /jobs` route on bare
//! actix-web, with a plain `tokio::spawn` of a sleep (onto the actix worker's own runtime) and
//! nothing supervised, tracked or drained.
//!
//! Same interface as `examples/actix` where it matters for the comparison: binds
//! `127.0.0.1:$PORT` (default 3000, 0 for any free port) with actix's default number of
//! workers, inside a multi-thread tokio runtime of `main` as the example does; prints
//! `listening on http://ADDR` once bound; answers `POST /jobs?duration_ms=N` with 202
//! and `{"id": n}`; and stops on SIGTERM or SIGINT through actix's own graceful shutdown
//! (which waits for requests in flight, not for the spawned sleeps).
//!
//! With `SPAWN_ON=main` it spawns onto the runtime of `main` instead, as the actix crate's
//! supervisor did before its workers outlived the supervisor's shutdown: the benchmark's
//! `bare-actix-main-runtime` system, which measures what crossing runtimes costs without any
//! supervision.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;
use serde_json::json;

/// The example's parameters; `kind` is accepted and ignored (every job is a sleep here), as
/// serde ignores unknown fields.
#[derive(Debug, Deserialize)]
struct JobParams {
    #[serde(default)]
    duration_ms: u64,
}

/// Where the jobs run: the actix worker's own runtime (`tokio::spawn`, the default), or, with
/// `SPAWN_ON=main`, the runtime of `main`, which outlives the workers, as the actix crate's
/// supervisor did; the difference between the two is the cost of crossing runtimes.
#[derive(Clone)]
struct SpawnOn(Option<tokio::runtime::Handle>);

async fn post_job(
    next_id: web::Data<AtomicU64>,
    spawn_on: web::Data<SpawnOn>,
    params: web::Query<JobParams>,
) -> HttpResponse {
    // Relaxed: ids only need to be unique.
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    let duration = Duration::from_millis(params.duration_ms);
    let job = async move { tokio::time::sleep(duration).await };
    match &spawn_on.0 {
        None => drop(tokio::spawn(job)),
        Some(main) => drop(main.spawn(job)),
    }
    HttpResponse::Accepted().json(json!({ "id": id }))
}

async fn get_tasks() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "running": null, "shutting_down": false }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .parse()
            .map_err(|err| format!("PORT={port:?} is not a port number (0-65535): {err}"))?,
        Err(_) => 3000,
    };
    let spawn_on = match std::env::var("SPAWN_ON").as_deref() {
        Err(_) | Ok("worker") => SpawnOn(None),
        Ok("main") => SpawnOn(Some(tokio::runtime::Handle::current())),
        Ok(other) => return Err(format!("SPAWN_ON={other:?}: use `worker` or `main`").into()),
    };
    let next_id = web::Data::new(AtomicU64::new(1));
    let spawn_on = web::Data::new(spawn_on);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(next_id.clone())
            .app_data(spawn_on.clone())
            .route("/jobs", web::post().to(post_job))
            .route("/tasks", web::get().to(get_tasks))
    })
    .bind(("127.0.0.1", port))?;
    let address = server.addrs()[0];
    let server = server.run();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on http://{address}")?;
    // The benchmark script waits for this line on a pipe, where stdout is block-buffered.
    stdout.flush()?;
    drop(stdout);
    server.await?;
    println!("shutdown report: bare actix does not track its tasks");
    Ok(())
}
