//! A read-only dashboard of the running tasks: an HTML page and the JSON it polls.

use std::collections::hash_map::RandomState;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use axum_core::body::Body;
use axum_core::response::Response;
use background_tasks::{FailureKind, Snapshot, TaskKind, TaskSupervisor};
use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{Method, Request, StatusCode};
use serde::Serialize;
use tower_service::Service;

/// The page, with `{nonce}` where each response puts its CSP nonce.
const PAGE: &str = include_str!("dashboard.html");

/// How many of the longest-running tasks the dashboard lists by default.
const DEFAULT_LONGEST_RUNNING: usize = 20;

/// A dashboard of `supervisor`'s tasks, to mount where you want it with
/// [`Router::nest_service`](axum::Router::nest_service).
///
/// Under its mount point it serves, to `GET` and `HEAD` only:
///
/// - `/`: an HTML page that updates itself every second: the phase, the totals, the running
///   tasks by name with their count and oldest age, the longest-running tasks, the recent
///   failures (name, message, time) and, during a shutdown, its progress. It is one
///   self-contained page, readable on a phone: no build step, no CDN, no request anywhere but
///   to its own `snapshot.json`.
/// - `/snapshot.json`: the same data as JSON, in the schema of [`DashboardSnapshot`].
///
/// # Security
///
/// Nothing is served unless you mount it, and it shows what the supervisor knows: task names,
/// ids, ages and panic messages, never a task's arguments or payload. Mount it behind your
/// authentication, as below. Every name and message is put in the page as text, never as
/// HTML (a task named `<script>alert(1)</script>` shows as those characters), and the page
/// carries a Content-Security-Policy that runs only its own script and lets it connect only
/// to its own origin; it cannot be framed. It changes nothing: other methods answer `405`.
///
/// # Examples
///
/// Behind an authentication layer (here tower-http's `ValidateRequestHeaderLayer::bearer`,
/// written out as a plain middleware):
///
/// ```
/// use axum::{Router, extract::Request, http::StatusCode, middleware::{self, Next}};
/// use axum::response::Response;
/// use background_tasks_axum::{TaskSupervisor, tasks_dashboard};
///
/// async fn require_token(request: Request, next: Next) -> Result<Response, StatusCode> {
///     let authorized = request
///         .headers()
///         .get("authorization")
///         .is_some_and(|value| value == "Bearer change-me");
///     if authorized { Ok(next.run(request).await) } else { Err(StatusCode::UNAUTHORIZED) }
/// }
///
/// let supervisor = TaskSupervisor::new();
/// let app: Router = Router::new().nest_service(
///     "/dashboard",
///     Router::new()
///         .fallback_service(tasks_dashboard(supervisor.clone()))
///         .layer(middleware::from_fn(require_token)),
/// );
/// ```
#[must_use]
pub fn tasks_dashboard(supervisor: TaskSupervisor) -> TasksDashboard {
    TasksDashboard {
        supervisor,
        longest_running: DEFAULT_LONGEST_RUNNING,
    }
}

/// The service [`tasks_dashboard`] returns.
#[derive(Debug, Clone)]
pub struct TasksDashboard {
    supervisor: TaskSupervisor,
    longest_running: usize,
}

impl TasksDashboard {
    /// How many of the longest-running tasks to list; 20 by default. The counts by name cover
    /// every task whatever this says.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{TaskSupervisor, tasks_dashboard};
    ///
    /// let dashboard = tasks_dashboard(TaskSupervisor::new()).longest_running(50);
    /// ```
    #[must_use]
    pub fn longest_running(mut self, tasks: usize) -> Self {
        self.longest_running = tasks;
        self
    }

    /// The supervisor it shows.
    pub fn get_ref(&self) -> &TaskSupervisor {
        &self.supervisor
    }

    /// The snapshot `snapshot.json` serves.
    ///
    /// # Examples
    ///
    /// ```
    /// use background_tasks_axum::{TaskSupervisor, tasks_dashboard};
    ///
    /// let dashboard = tasks_dashboard(TaskSupervisor::new());
    /// let snapshot = dashboard.snapshot();
    /// assert_eq!(snapshot.phase, "running");
    /// assert_eq!(snapshot.counters.spawned, 0);
    /// ```
    #[must_use]
    pub fn snapshot(&self) -> DashboardSnapshot {
        DashboardSnapshot::from(self.supervisor.snapshot_oldest(self.longest_running))
    }

    fn respond(&self, method: &Method, path: &str) -> Response {
        let head = method == Method::HEAD;
        if method != Method::GET && !head {
            let mut response = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "the task dashboard is read-only: use GET\n",
            );
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        let mut response = match path {
            "" | "/" | "/index.html" => page(),
            "/snapshot.json" => json(&self.snapshot()),
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: the task dashboard serves / and /snapshot.json\n",
            ),
        };
        if head {
            *response.body_mut() = Body::empty();
        }
        response
    }
}

impl<B> Service<Request<B>> for TasksDashboard {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(request.method(), request.uri().path())))
    }
}

/// A fresh nonce for the page's Content-Security-Policy: what lets its own script and style
/// run, and nothing else. Unpredictable to anyone outside the process: a counter hashed with
/// SipHash under the process's random keys.
fn nonce() -> String {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    // Relaxed: only uniqueness matters.
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let (a, b) = (keys.hash_one((count, 0_u8)), keys.hash_one((count, 1_u8)));
    format!("{a:016x}{b:016x}")
}

fn page() -> Response {
    let nonce = nonce();
    let mut response = Response::new(Body::from(PAGE.replace("{nonce}", &nonce)));
    let policy = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // A hex nonce always makes a valid header value.
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        headers.insert(CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    common_headers(response)
}

fn json(snapshot: &DashboardSnapshot) -> Response {
    let body = match serde_json::to_vec(snapshot) {
        Ok(body) => body,
        // Plain structs of numbers and strings always serialize; should that change, say so.
        Err(error) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot serialize the snapshot: {error}\n"),
            );
        }
    };
    let mut response = Response::new(Body::from(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    common_headers(response)
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    common_headers(response)
}

fn common_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    // Live data: never from a cache, never sniffed as something else.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// What `snapshot.json` serves: a [`Snapshot`] of the supervisor, with durations in
/// milliseconds and times in milliseconds since the Unix epoch.
///
/// The schema, with every field always present (`null` where the text says so):
///
/// ```text
/// {
///   "phase": "running" | "draining" | "cancelling" | "aborting" | "finished",
///   "running": 12,                    // tasks running now
///   "oldest_age_ms": 5012 | null,     // the oldest task that has started
///   "counters": {                     // since the supervisor was built
///     "spawned": 40, "completed": 25, "panicked": 1, "cancelled": 0,
///     "aborted": 2, "abandoned": 0,
///     "refused": { "shutting_down": 0, "at_capacity": 3 }
///   },
///   "by_name": [                      // most numerous first; unnamed tasks: "name": null
///     { "name": "send-mail", "running": 8, "oldest_age_ms": 5012 }
///   ],
///   "oldest_tasks": [                 // the longest running, oldest first
///     { "id": 7, "name": "send-mail" | null, "kind": "async" | "blocking" | "tracked",
///       "started": true, "age_ms": 5012 }
///   ],
///   "recent_failures": [              // most recent first, at most 32
///     { "id": 9, "name": "resize" | null,
///       "kind": "panic" | "aborted" | "abandoned" | "dropped",
///       "message": "no such image" | null,   // the panic message, for panics
///       "description": "task 9 (resize) panicked: no such image",
///       "at_unix_ms": 1764950000000, "ago_ms": 1200 }
///   ],
///   "shutdown": null | {              // once shutdown has begun
///     "elapsed_ms": 1200, "shutdown_timeout_ms": 5000, "cancel_grace_ms": 1000,
///     "report": null | {              // once the report is written
///       "completed": 10, "cancelled": 1, "aborted": 2, "abandoned": 0, "elapsed_ms": 6010
///     }
///   }
/// }
/// ```
///
/// The fields mean what the [`Snapshot`] fields of the same name do. New fields may be added;
/// none will be removed or change meaning.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct DashboardSnapshot {
    /// [`SupervisorPhase::as_str`](background_tasks::SupervisorPhase::as_str).
    pub phase: &'static str,
    /// [`Snapshot::running`].
    pub running: usize,
    /// [`Snapshot::oldest_age`], in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// [`Snapshot::counters`].
    pub counters: DashboardCounters,
    /// [`Snapshot::by_name`].
    pub by_name: Vec<DashboardName>,
    /// [`Snapshot::tasks`], the longest running.
    pub oldest_tasks: Vec<DashboardTask>,
    /// [`Snapshot::recent_failures`].
    pub recent_failures: Vec<DashboardFailure>,
    /// [`Snapshot::shutdown`].
    pub shutdown: Option<DashboardShutdown>,
}

/// The `counters` of a [`DashboardSnapshot`]: see [`background_tasks::Counters`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardCounters {
    pub spawned: u64,
    pub completed: u64,
    pub panicked: u64,
    pub cancelled: u64,
    pub aborted: u64,
    pub abandoned: u64,
    pub refused: DashboardRefused,
}

/// The `refused` counters of a [`DashboardSnapshot`], by reason.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardRefused {
    pub shutting_down: u64,
    pub at_capacity: u64,
}

/// An entry of `by_name` in a [`DashboardSnapshot`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardName {
    pub name: Option<String>,
    pub running: usize,
    pub oldest_age_ms: u64,
}

/// An entry of `oldest_tasks` in a [`DashboardSnapshot`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardTask {
    pub id: u64,
    pub name: Option<String>,
    /// `"async"`, `"blocking"` or `"tracked"`.
    pub kind: &'static str,
    pub started: bool,
    pub age_ms: u64,
}

/// An entry of `recent_failures` in a [`DashboardSnapshot`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardFailure {
    pub id: u64,
    pub name: Option<String>,
    /// `"panic"`, `"aborted"`, `"abandoned"` or `"dropped"`.
    pub kind: &'static str,
    /// The panic message, for a panic with a string message.
    pub message: Option<String>,
    /// The whole failure in one line, as it is logged.
    pub description: String,
    pub at_unix_ms: u64,
    pub ago_ms: u64,
}

/// The `shutdown` of a [`DashboardSnapshot`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardShutdown {
    pub elapsed_ms: u64,
    pub shutdown_timeout_ms: u64,
    pub cancel_grace_ms: u64,
    pub report: Option<DashboardReport>,
}

/// The `report` of a finished shutdown in a [`DashboardSnapshot`]: see
/// [`ShutdownReport`](background_tasks::ShutdownReport).
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct DashboardReport {
    pub completed: usize,
    pub cancelled: usize,
    pub aborted: usize,
    pub abandoned: usize,
    pub elapsed_ms: u64,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl From<Snapshot> for DashboardSnapshot {
    fn from(snapshot: Snapshot) -> Self {
        let counters = snapshot.counters;
        Self {
            phase: snapshot.phase.as_str(),
            running: snapshot.running,
            oldest_age_ms: snapshot.oldest_age.map(millis),
            counters: DashboardCounters {
                spawned: counters.spawned,
                completed: counters.completed,
                panicked: counters.panicked,
                cancelled: counters.cancelled,
                aborted: counters.aborted,
                abandoned: counters.abandoned,
                refused: DashboardRefused {
                    shutting_down: counters.refused_shutting_down,
                    at_capacity: counters.refused_at_capacity,
                },
            },
            by_name: snapshot
                .by_name
                .into_iter()
                .map(|count| DashboardName {
                    name: count.name.map(String::from),
                    running: count.running,
                    oldest_age_ms: millis(count.oldest_age),
                })
                .collect(),
            oldest_tasks: snapshot
                .tasks
                .into_iter()
                .map(|task| DashboardTask {
                    id: task.id.as_u64(),
                    name: task.name.map(String::from),
                    kind: match task.kind {
                        TaskKind::Blocking => "blocking",
                        TaskKind::Tracked => "tracked",
                        _ => "async",
                    },
                    started: task.started,
                    age_ms: millis(task.age),
                })
                .collect(),
            recent_failures: snapshot
                .recent_failures
                .into_iter()
                .map(|recent| {
                    let failure = &recent.failure;
                    DashboardFailure {
                        id: failure.task_id().as_u64(),
                        name: failure.task_name().map(str::to_owned),
                        kind: match failure.kind() {
                            FailureKind::Panic => "panic",
                            FailureKind::Aborted => "aborted",
                            FailureKind::Abandoned => "abandoned",
                            _ => "dropped",
                        },
                        message: failure.panic_message().map(str::to_owned),
                        description: failure.to_string(),
                        at_unix_ms: recent.at.duration_since(UNIX_EPOCH).map_or(0, millis),
                        ago_ms: millis(recent.ago),
                    }
                })
                .collect(),
            shutdown: snapshot.shutdown.map(|progress| DashboardShutdown {
                elapsed_ms: millis(progress.elapsed),
                shutdown_timeout_ms: millis(progress.shutdown_timeout),
                cancel_grace_ms: millis(progress.cancel_grace),
                report: progress.report.map(|report| DashboardReport {
                    completed: report.completed(),
                    cancelled: report.cancelled(),
                    aborted: report.aborted(),
                    abandoned: report.abandoned(),
                    elapsed_ms: millis(report.elapsed()),
                }),
            }),
        }
    }
}
