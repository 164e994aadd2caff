//! A real PostgreSQL server for tests: the one named by `TEST_POSTGRES_URL`, or a throwaway
//! cluster started from the machine's PostgreSQL 15 binaries.
//!
//! The throwaway cluster is `initdb`'d into a temp directory (as the `postgres` user when the
//! tests run as root, since PostgreSQL refuses to run as root), listens on a free loopback
//! port, and logs to a file in that directory (`pg_ctl start -l`: without it the server would
//! inherit the test's output pipes, and a captured run would never end). A watcher process
//! stops it and removes the directory as soon as the test process is gone, however it ended:
//! a panic, an abort, a `kill -9`.
//!
//! Tests that need a server call [`server`] (one cluster per test binary) or [`Cluster::start`]
//! (a cluster of their own, which they may stop and start), then [`Server::database`] for a
//! fresh database. Without a URL and without the binaries, [`server`] returns `None` after
//! printing why to the terminal, past the test harness's capture: the test then skips, loudly.
//! When the binaries exist but the server does not start, it panics with the server's log.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The variable naming a server to use instead of a throwaway one:
/// `postgres://<user>[:<password>]@<host>:<port>`, a user that may create databases.
pub const URL_VARIABLE: &str = "TEST_POSTGRES_URL";

/// Where Debian's PostgreSQL 15 server package keeps its binaries, off `PATH`; `PG_BIN_DIR`
/// overrides it.
pub const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL server reachable over TCP.
#[derive(Debug)]
pub struct Server {
    /// `postgres://user@host:port`, without a database.
    base: String,
}

impl Server {
    /// `postgres://user@host:port/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    /// Creates a database with a fresh name (`<prefix>_<pid>_<n>`) and returns its URL.
    ///
    /// # Panics
    ///
    /// When the server refuses.
    pub async fn database(&self, prefix: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: only uniqueness matters.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id()).to_lowercase();
        let admin = self.url("postgres");
        let mut conn = connect(&admin, Duration::from_secs(20)).await;
        // Safe: the name is made of the prefix (a literal in the tests), digits and `_`.
        let create = format!("CREATE DATABASE \"{name}\"");
        sqlx::query(sqlx::AssertSqlSafe(create.as_str()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|error| panic!("CREATE DATABASE {name} on {admin}: {error}"));
        sqlx::Connection::close(conn).await.ok();
        self.url(&name)
    }
}

/// Connects, retrying for up to `within` (a server that just started may refuse at first).
async fn connect(url: &str, within: Duration) -> sqlx::PgConnection {
    let deadline = Instant::now() + within;
    loop {
        match <sqlx::PgConnection as sqlx::Connection>::connect(url).await {
            Ok(conn) => return conn,
            Err(error) if Instant::now() >= deadline => {
                panic!("cannot connect to the test PostgreSQL server at {url}: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The server of this test binary: `TEST_POSTGRES_URL`'s, or one throwaway cluster started
/// on first use. `None` (after a loud message) when neither is available.
///
/// # Panics
///
/// When the binaries exist but the cluster does not start.
pub fn server() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<(Server, Option<Cluster>)>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if let Ok(url) = std::env::var(URL_VARIABLE) {
                return Some((
                    Server {
                        base: url.trim_end_matches('/').to_owned(),
                    },
                    None,
                ));
            }
            let cluster = Cluster::start()?;
            Some((
                Server {
                    base: cluster.base(),
                },
                Some(cluster),
            ))
        })
        .as_ref()
        .map(|(server, _)| server)
}

/// Says on the terminal why a test is skipped: `eprintln!` would be swallowed by the test
/// harness's capture of a passing test.
///
/// # Panics
///
/// Under CI (`CI` set, as the project's CI sets it), where a skipped PostgreSQL test would
/// pass a run that never tested PostgreSQL: the machine CI runs on has the binaries.
pub fn skip_loudly(test: &str) {
    let message = format!(
        "no PostgreSQL server for {test}. Install the PostgreSQL 15 server binaries in \
         {DEFAULT_BIN_DIR} (or set PG_BIN_DIR), or set {URL_VARIABLE}."
    );
    assert!(std::env::var_os("CI").is_none(), "under CI: {message}");
    let _ = std::io::stderr().write_all(format!("\n*** SKIPPED: {message} ***\n").as_bytes());
}

/// A throwaway PostgreSQL cluster of this process, stopped and removed when dropped, or by
/// its watcher when the process ends without dropping it.
#[derive(Debug)]
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Cluster {
    /// Starts a new cluster on a free loopback port; `None` (after a loud message on the
    /// terminal) when the PostgreSQL binaries are not on this machine.
    ///
    /// # Panics
    ///
    /// When the binaries exist but `initdb` or the server fails; the message carries their
    /// output and the server's log.
    pub fn start() -> Option<Self> {
        let bin = std::env::var_os("PG_BIN_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_BIN_DIR), PathBuf::from);
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            let _ = std::io::stderr().write_all(
                format!(
                    "\n*** no PostgreSQL binaries in {} (initdb, pg_ctl) ***\n",
                    bin.display()
                )
                .as_bytes(),
            );
            return None;
        }
        // PostgreSQL refuses to run as root: then run it as `postgres`.
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("bt-postgres-")
            .tempdir()
            .expect("a temp dir for the cluster");
        if as_postgres {
            // The `postgres` user creates the data directory inside.
            chmod(dir.path(), 0o777);
        }
        let mut cluster = Self {
            dir,
            bin,
            port: 0,
            as_postgres,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        cluster.watch();
        cluster.port = free_port();
        cluster.start_server();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// The server, for [`Server::database`].
    pub fn server(&self) -> Server {
        Server { base: self.base() }
    }

    /// Stops the server (fast shutdown: connections are closed), keeping the data.
    ///
    /// # Panics
    ///
    /// When `pg_ctl stop` fails.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Starts the stopped server again on the same port.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let mut command = self.command("pg_ctl");
        command.args([
            "-D",
            &self.data(),
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
            "-w",
            "-t",
            "60",
            "start",
        ]);
        let output = command.output().expect("pg_ctl runs");
        if !output.status.success() {
            panic!(
                "the PostgreSQL test server did not start (pg_ctl {}):\n{}{}\nserver log:\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// Freezes the server with SIGSTOP (the postmaster and every backend), as a server that
    /// hangs or a network that drops packets: connections stay open and nothing answers.
    /// The server resumes when the guard drops, also when the test panics.
    ///
    /// # Panics
    ///
    /// When the server's processes cannot be found or signalled.
    #[must_use = "the server resumes when the guard drops"]
    pub fn freeze(&self) -> FrozenCluster {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let postmaster = std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|error| panic!("{}: {error}", pid_file.display()))
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let children = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &postmaster])
            .output()
            .expect("ps runs");
        let mut pids = vec![postmaster];
        pids.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
        let frozen = FrozenCluster { pids };
        frozen.signal("-STOP");
        frozen
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        // No inherited pipes: a server started from here must never hold the test's output.
        command.stdin(Stdio::null());
        command
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("{program} does not run: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A process that waits for this one to end, then stops the server and removes the
    /// directory: a test that panics past its drops, aborts or is killed leaves nothing.
    fn watch(&self) {
        let stop = format!(
            "{} '{}' -D '{}' -m immediate stop",
            if self.as_postgres {
                "runuser -u postgres --"
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data()
        );
        // A server left frozen by `freeze` (the test killed meanwhile) is resumed first, or
        // it could not act on the stop.
        let resume = format!(
            "pm=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             if [ -n \"$pm\" ]; then kill -CONT $pm $(ps -o pid= --ppid $pm) 2>/dev/null; fi",
            data = self.data()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {resume}; \
             {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        // Never waited for: it outlives this process by design, and exits only after it.
        #[expect(clippy::zombie_processes, reason = "the watcher outlives this process")]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs the cluster's watcher");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A cluster stopped by [`Cluster::freeze`]; resumed (SIGCONT) when dropped.
#[derive(Debug)]
pub struct FrozenCluster {
    /// The postmaster's and its children's, as `kill` takes them.
    pids: Vec<String>,
}

impl FrozenCluster {
    fn signal(&self, signal: &str) {
        // Only this cluster's own processes, by pid.
        let status = Command::new("kill")
            .arg(signal)
            .args(&self.pids)
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {:?} failed", self.pids);
    }
}

impl Drop for FrozenCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").args(&self.pids).status();
    }
}

fn is_root() -> bool {
    // `id -u` rather than a libc call: this crate stays free of unsafe code.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.trim_ascii() == b"0")
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|error| panic!("chmod {}: {error}", path.display()));
}

/// A loopback port that was free a moment ago. Another process may take it before the server
/// binds it; the server then fails to start, loudly.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("a bound address").port()
}
