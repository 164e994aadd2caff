//! The quickstart's job server over gRPC (tonic): `jobs.Jobs/StartJob` spawns a named
//! background job that outlives the call, and the server shuts down within one budget on
//! SIGTERM or SIGINT.
//!
//! ```text
//! cargo run -p example-grpc     # listening on http://127.0.0.1:3000
//! # Ctrl-C: calls in flight finish, jobs drain, then the report is printed; a second Ctrl-C
//! # aborts.
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

use background_tasks_tonic::{TaskSupervisor, serve};
use example_grpc::JobService;
use example_grpc::jobs_server::JobsServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
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
    let mut builder = TaskSupervisor::builder()
        .shutdown_timeout(config.shutdown_timeout)
        .cancel_grace(config.cancel_grace);
    if let Some(jobs) = config.max_tasks {
        builder = builder.max_tasks(jobs);
    }
    let supervisor = builder.build();
    let listener = TcpListener::bind(("127.0.0.1", config.port)).await?;
    let address = listener.local_addr()?;
    // `into_future` installs the SIGINT and SIGTERM handlers: from the moment the address is
    // announced, a signal shuts the server down gracefully.
    let serving = serve(
        listener,
        Routes::new(JobsServer::new(JobService)),
        supervisor,
    )
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
