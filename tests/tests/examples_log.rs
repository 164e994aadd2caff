//! Every example logs out of the box: a subscriber on stderr at `info` unless `RUST_LOG` says
//! otherwise, so that the shutdown's phases show without any setup. Each example runs as a
//! child process and is stopped with SIGTERM.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use background_tasks_e2e::{Server, example_binary};

const EXAMPLES: [&str; 4] = [
    "example-quickstart",
    "example-app-state",
    "example-startup-task",
    "example-testing",
];

/// The line the supervisor logs at INFO when its shutdown begins.
const SHUTDOWN_STARTED: &str = "background task shutdown started";

/// Starts `package`, stops it with SIGTERM, and returns its stderr.
fn logs_of_a_shutdown(package: &str, env: &[(&str, &str)]) -> String {
    let server = Server::start(&example_binary(package), env);
    // One answered request: the example serves as well as logs.
    let address = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("the example accepts");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n")
        .expect("the request is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    assert!(
        answer.starts_with("HTTP/1.1 "),
        "{package} answered {answer:?}"
    );
    server.sigterm();
    // Each example's shutdown is quick here (no task runs past the signal); the margin is for a
    // loaded machine.
    let (status, logs) = server.finish(Duration::from_secs(20));
    assert!(
        status.success(),
        "{package} exited with {status}; logs:\n{logs}"
    );
    logs
}

#[test]
fn every_example_logs_the_shutdown_at_info_without_rust_log() {
    for package in EXAMPLES {
        let logs = logs_of_a_shutdown(package, &[]);
        assert!(
            logs.contains(SHUTDOWN_STARTED) && logs.contains("INFO"),
            "{package} logged no INFO line {SHUTDOWN_STARTED:?} without RUST_LOG; logs:\n{logs}"
        );
    }
}

#[test]
fn every_example_honours_rust_log() {
    for package in EXAMPLES {
        let logs = logs_of_a_shutdown(package, &[("RUST_LOG", "warn")]);
        assert!(
            !logs.contains(SHUTDOWN_STARTED),
            "{package} logged at INFO with RUST_LOG=warn; logs:\n{logs}"
        );
    }
}

/// The examples announce their address once `serve` has installed its signal handlers
/// (`into_future` before the line): a SIGTERM right after the line shuts them down gracefully.
/// Before, the line came first, and such a signal killed the process (the quickstart has its
/// own test of this, with more attempts).
#[test]
fn every_example_shuts_down_gracefully_on_a_sigterm_right_after_its_listening_line() {
    for package in &EXAMPLES[1..] {
        for attempt in 1..=5 {
            let server = Server::start(&example_binary(package), &[]);
            server.sigterm();
            let (status, logs) = server.finish(Duration::from_secs(20));
            assert!(
                status.success(),
                "{package}, attempt {attempt}: SIGTERM right after `listening on` ended it with \
                 {status} instead of a graceful shutdown; logs:\n{logs}"
            );
            assert!(logs.contains(SHUTDOWN_STARTED), "{package}: {logs}");
        }
    }
}
