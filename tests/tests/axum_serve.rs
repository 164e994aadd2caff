//! An app served with `axum::serve` instead of `background_tasks_axum::serve` never shuts its
//! supervisor down: the tasks still running when `main` returns are dropped with the runtime.
//! That is never silent: the binary `axum-serve` (in `src/bin/`) runs as a real process, and
//! its stderr at exit names the task it lost.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use background_tasks_e2e::Server;

#[test]
fn a_task_left_running_by_axum_serve_is_logged_at_exit() {
    let server = Server::start(Path::new(env!("CARGO_BIN_EXE_axum-serve")), &[]);
    let address = server.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).expect("the app accepts");
    stream
        .write_all(
            b"POST /sign-up HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .expect("the request is sent");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    server.sigterm();
    let (status, logs) = server.finish(Duration::from_secs(20));
    assert!(status.success(), "exited with {status}; logs:\n{logs}");
    let lost: Vec<_> = logs
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("was dropped unfinished"))
        .collect();
    assert_eq!(lost.len(), 1, "logs:\n{logs}");
    assert!(
        lost[0].contains("welcome-mail") && lost[0].contains("task.id=1"),
        "{}",
        lost[0]
    );
}
