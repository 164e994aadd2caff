//! Helpers for the end-to-end tests in `tests/tests/`: the examples as child processes,
//! an HTTP client that opens a fresh connection per request, and a parser for the report line.
//!
//! # How the quickstart binary is found
//!
//! `env!("CARGO_BIN_EXE_…")` only names binaries of the package under test, and the quickstart
//! is another package. So [`quickstart_binary`] runs `cargo build -p example-quickstart` once
//! per test binary, with the cargo that runs the tests (`$CARGO`), into the target directory
//! and profile the test executable itself was built in (found from
//! [`std::env::current_exe`]: `<target>/<profile>/deps/<test>-<hash>`). From a clean clone,
//! `cargo test --workspace` therefore builds it on first use, and a `CARGO_TARGET_DIR` set by
//! the caller is honoured without being read. When the binary is fresh the build is a no-op
//! that takes well under a second.

pub mod postgres;
pub mod recorder;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The quickstart binary, built on first use in the test executable's target dir and profile.
///
/// # Panics
///
/// As [`example_binary`].
pub fn quickstart_binary() -> PathBuf {
    example_binary("example-quickstart")
}

/// The binary of the example package `package` (`example-…`), built on first use in the test
/// executable's target dir and profile.
///
/// # Panics
///
/// When the build fails; the panic message carries cargo's output.
pub fn example_binary(package: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    // Held during the build: two tests asking for the same binary build it once.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, binary)) = built.iter().find(|(name, _)| name == package) {
        return binary.clone();
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory lives in the target directory");
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let output = Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--profile"])
        .arg(&profile)
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join(format!("{package}{}", std::env::consts::EXE_SUFFIX));
    assert!(binary.is_file(), "{} was not built", binary.display());
    built.push((package.to_owned(), binary.clone()));
    binary
}

/// An HTTP client that opens a new connection for every request, as clients behind a load
/// balancer do, so that a connection the server closed gracefully is never reused; it ignores
/// proxy settings from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("a client")
}

/// A server (the quickstart, another example, or a binary of this package) running as a child
/// process; killed when dropped, so that a failing test leaves nothing behind.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:NNNN`.
    pub base: String,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread copying stderr into `stderr`, until the process closes it.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
    /// The temp directory of the default database, removed when the server is dropped.
    _database: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the quickstart on a free port with the given environment, and waits for its
    /// `listening on` line (up to 10 s).
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn quickstart(env: &[(&str, &str)]) -> Self {
        Self::start(&quickstart_binary(), env)
    }

    /// Starts `binary` with `PORT=0`, without the caller's `RUST_LOG` (so that the binary's
    /// default shows, unless `env` sets it) and with `env`, and waits for its
    /// `listening on <url>` line on stdout (up to 10 s).
    ///
    /// # Panics
    ///
    /// When it cannot start or does not print the line in time.
    pub fn start(binary: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        command
            .env("PORT", "0")
            .env_remove("RUST_LOG")
            // Plain log lines, without colour codes, for the tests to read.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Durable jobs go to a database of this test's own unless the test names one, never
        // to `quickstart.db` in the source tree.
        let database = if env.iter().any(|(name, _)| *name == "DATABASE_URL") {
            None
        } else {
            let dir = tempfile::tempdir().expect("a temp dir");
            command.env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("quickstart.db").display()),
            );
            Some(dir)
        };
        // No durable workers unless the test asks for them: their fetcher is a task of the
        // supervisor, and the in-process tests count tasks exactly.
        command.env("DURABLE_WORKERS", "0");
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the quickstart starts");

        let (lines, stdout) = channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped stderr");
        let log = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buffer = [0; 4096];
            while let Ok(read @ 1..) = err.read(&mut buffer) {
                let text = String::from_utf8_lossy(&buffer[..read]);
                log.lock().expect("the log lock").push_str(&text);
            }
        });

        let mut quickstart = Self {
            child,
            base: String::new(),
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
            _database: database,
        };
        let line = quickstart.line_starting_with("listening on ", Duration::from_secs(10));
        quickstart.base = line["listening on ".len()..].trim().to_owned();
        quickstart
    }

    /// The URL of `path` on the server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts `POST /jobs?{query}` to a server with the quickstart's job interface (the
    /// quickstart, examples/actix), checks that it was accepted (202), and returns the job's id.
    ///
    /// # Panics
    ///
    /// When the server does not answer, answers another status, or with no numeric `id`.
    pub async fn post_job(&self, client: &reqwest::Client, query: &str) -> u64 {
        let response = client
            .post(self.url(&format!("/jobs?{query}")))
            .send()
            .await
            .expect("POST /jobs is answered");
        assert_eq!(
            response.status(),
            reqwest::StatusCode::ACCEPTED,
            "POST /jobs?{query}"
        );
        let body: serde_json::Value = response.json().await.expect("a JSON body");
        body["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("POST /jobs?{query}: no numeric id in {body}"))
    }

    /// The process id, for `kill`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM through `kill -TERM <pid>`, so that no signal crate is needed.
    ///
    /// # Panics
    ///
    /// When `kill` fails.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Kills the process with SIGKILL (`kill -9`: no handler, no shutdown) and waits for it.
    pub fn kill(&mut self) -> ExitStatus {
        // Only our own child, by its handle.
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed child")
    }

    /// What the process wrote to stderr so far (its logs), for failure messages.
    pub fn logs(&self) -> String {
        self.stderr.lock().expect("the log lock").clone()
    }

    /// The next stdout line that starts with `prefix`, waiting up to `timeout`.
    ///
    /// # Panics
    ///
    /// When no such line comes in time, with the logs in the message.
    pub fn line_starting_with(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => panic!(
                    "no stdout line starting with {prefix:?} within {timeout:?}; logs:\n{}",
                    self.logs()
                ),
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running (it is
    /// then killed when `self` drops).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Server {
    /// Waits up to `timeout` for the process to exit, then for the end of its stderr; returns
    /// how it exited and all it wrote to stderr.
    ///
    /// # Panics
    ///
    /// When it does not exit in time, with its logs in the message.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, String) {
        let Some(status) = self.wait_exit(timeout) else {
            panic!("still running after {timeout:?}; logs:\n{}", self.logs())
        };
        if let Some(reader) = self.stderr_reader.take() {
            // The pipe closes when the process exits: the reader ends at once.
            let _ = reader.join();
        }
        (status, self.logs())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only our own child, by its handle; errors mean it has exited already.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long the supervisor's shutdown took, from its report line: `... shut down in 2.0s: ...`.
///
/// # Panics
///
/// When the line holds no duration.
pub fn shutdown_took(line: &str) -> Duration {
    let (_, rest) = line
        .split_once("shut down in ")
        .unwrap_or_else(|| panic!("no duration in the report line {line:?}"));
    let text = rest.split(':').next().unwrap_or_default();
    let (number, scale) = match text.strip_suffix("ms") {
        Some(number) => (number, 0.001),
        None => (text.trim_end_matches('s'), 1.0),
    };
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("no duration in the report line {line:?}"));
    Duration::from_secs_f64(number * scale)
}

/// The four counts of a `ShutdownReport` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// `N completed`.
    pub completed: usize,
    /// `N cancelled`.
    pub cancelled: usize,
    /// `N aborted`.
    pub aborted: usize,
    /// `N abandoned`.
    pub abandoned: usize,
}

impl Counts {
    /// Every task the report accounts for.
    pub fn total(&self) -> usize {
        self.completed + self.cancelled + self.aborted + self.abandoned
    }

    /// Parses the counts from a report line: `... 3 completed, 1 cancelled, 2 aborted,
    /// 0 abandoned; ...`.
    ///
    /// # Panics
    ///
    /// When one of the four counts is missing.
    pub fn parse(line: &str) -> Self {
        let count = |label: &str| {
            let words: Vec<&str> = line.split_whitespace().collect();
            words
                .windows(2)
                .find_map(|pair| {
                    let word = pair[1].trim_end_matches([',', ';', ':']);
                    (word == label)
                        .then(|| pair[0].parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or_else(|| panic!("no `N {label}` in the report line {line:?}"))
        };
        Self {
            completed: count("completed"),
            cancelled: count("cancelled"),
            aborted: count("aborted"),
            abandoned: count("abandoned"),
        }
    }
}

/// Polls `check` every 10 ms until it returns `Some`, for up to `timeout`.
///
/// # Panics
///
/// When the deadline passes, with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn parses_the_counts_of_a_report_line() {
        let line = "shutdown report: background tasks shut down in 1.5s: 3 completed, \
                    1 cancelled, 2 aborted, 0 abandoned; aborted: send-mail (task 4, 1.5s)";
        assert_eq!(
            Counts::parse(line),
            Counts {
                completed: 3,
                cancelled: 1,
                aborted: 2,
                abandoned: 0
            }
        );
    }
}
