//! What the failure callback is told.

use crate::handle::TaskId;
use crate::report::Age;
use std::borrow::Cow;
use std::fmt;

/// A task that ended badly: it panicked, shutdown had to abort or abandon it, or it was
/// dropped unfinished because its runtime shut down before the supervisor did.
///
/// Passed to the callback set with
/// [`SupervisorBuilder::on_failure`](crate::SupervisorBuilder::on_failure), so that failures of
/// detached tasks reach your error reporting and are never lost silently. Every failure is also
/// logged through `tracing`.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let supervisor = TaskSupervisor::builder()
///     .on_failure({
///         let seen = seen.clone();
///         move |failure| seen.lock().unwrap().push(failure.to_string())
///     })
///     .build();
/// let _ = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap().await;
/// assert_eq!(seen.lock().unwrap()[0], "task 1 (resize) panicked: no such image");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TaskFailure {
    id: TaskId,
    name: Option<Cow<'static, str>>,
    kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Panic {
        message: Option<String>,
    },
    Aborted {
        age: Age,
    },
    /// `tracked`: a future its owner polls, rather than a blocking task.
    Abandoned {
        age: Age,
        tracked: bool,
    },
    Dropped {
        age: Age,
    },
}

/// How a task failed: what [`TaskFailure::kind`] says.
///
/// # Examples
///
/// ```
/// use background_tasks::{FailureKind, TaskSupervisor};
///
/// let supervisor = TaskSupervisor::builder()
///     .on_failure(|failure| match failure.kind() {
///         FailureKind::Dropped => eprintln!("lost: {failure}"),
///         _ => eprintln!("failed: {failure}"),
///     })
///     .build();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// The task panicked.
    Panic,
    /// Shutdown aborted the task when its budget ran out.
    Aborted,
    /// Shutdown left the task running on its thread, which nothing can stop.
    Abandoned,
    /// The task was dropped unfinished outside a shutdown: its runtime shut down (at the end
    /// of `main`, in a panic, or after `axum::serve` returned) before the supervisor was shut
    /// down. A task aborted through its [`TaskHandle`](crate::TaskHandle) is not reported.
    Dropped,
}

impl TaskFailure {
    pub(crate) fn new(id: TaskId, name: Option<Cow<'static, str>>, kind: Kind) -> Self {
        Self { id, name, kind }
    }

    /// The failed task's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert_eq!(failure.task_id(), id);
    /// # }
    /// ```
    #[must_use]
    pub fn task_id(&self) -> TaskId {
        self.id
    }

    /// The failed task's name, when it was spawned with one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert_eq!(failure.task_name(), Some("resize"));
    /// # }
    /// ```
    #[must_use]
    pub fn task_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How the task failed.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::{FailureKind, TaskSupervisor};
    ///
    /// let kinds = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let kinds = kinds.clone();
    ///         move |failure| kinds.lock().unwrap().push(failure.kind())
    ///     })
    ///     .build();
    /// let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// runtime.block_on(async {
    ///     supervisor.task("welcome-mail").spawn(std::future::pending::<()>()).unwrap();
    ///     tokio::task::yield_now().await;
    /// });
    /// // Dropped with its runtime, the supervisor never shut down.
    /// drop(runtime);
    /// assert_eq!(*kinds.lock().unwrap(), [FailureKind::Dropped]);
    /// ```
    #[must_use]
    pub fn kind(&self) -> FailureKind {
        match self.kind {
            Kind::Panic { .. } => FailureKind::Panic,
            Kind::Aborted { .. } => FailureKind::Aborted,
            Kind::Abandoned { .. } => FailureKind::Abandoned,
            Kind::Dropped { .. } => FailureKind::Dropped,
        }
    }

    /// Returns `true` if the task was dropped unfinished because its runtime shut down before
    /// the supervisor did (see [`FailureKind::Dropped`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let _ = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap().await;
    /// assert!(!failures.lock().unwrap()[0].is_dropped());
    /// # }
    /// ```
    #[must_use]
    pub fn is_dropped(&self) -> bool {
        matches!(self.kind, Kind::Dropped { .. })
    }

    /// Returns `true` if the task panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert!(failure.is_panic());
    /// # }
    /// ```
    #[must_use]
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, Kind::Panic { .. })
    }

    /// Returns `true` if shutdown aborted the task when its budget ran out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert!(!failure.is_aborted());
    /// # }
    /// ```
    #[must_use]
    pub fn is_aborted(&self) -> bool {
        matches!(self.kind, Kind::Aborted { .. })
    }

    /// Returns `true` if shutdown left the task running: a blocking task still on its thread
    /// when the budget ran out, which nothing can stop.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert!(!failure.is_abandoned());
    /// # }
    /// ```
    #[must_use]
    pub fn is_abandoned(&self) -> bool {
        matches!(self.kind, Kind::Abandoned { .. })
    }

    /// The panic message, when the task panicked with a string message.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let failures = Arc::new(Mutex::new(Vec::new()));
    /// let supervisor = TaskSupervisor::builder()
    ///     .on_failure({
    ///         let failures = failures.clone();
    ///         move |failure| failures.lock().unwrap().push(failure.clone())
    ///     })
    ///     .build();
    /// let handle = supervisor.task("resize").spawn(async { panic!("no such image") }).unwrap();
    /// let id = handle.id();
    /// let _ = handle.await;
    /// let failure = failures.lock().unwrap()[0].clone();
    /// assert_eq!(failure.panic_message(), Some("no such image"));
    /// # }
    /// ```
    #[must_use]
    pub fn panic_message(&self) -> Option<&str> {
        match &self.kind {
            Kind::Panic { message } => message.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.id)?;
        if let Some(name) = &self.name {
            write!(f, " ({name})")?;
        }
        match &self.kind {
            Kind::Panic {
                message: Some(message),
            } => write!(f, " panicked: {message}"),
            Kind::Panic { message: None } => f.write_str(" panicked with a non-string payload"),
            Kind::Aborted {
                age: Age::Known(age),
            } => write!(f, " was aborted by shutdown after running {age:.1?}"),
            Kind::Aborted {
                age: Age::NotStarted,
            } => f.write_str(" was aborted by shutdown before it started"),
            Kind::Aborted {
                age: Age::FirstPoll,
            } => f.write_str(" was aborted by shutdown in its first poll"),
            Kind::Abandoned {
                age: Age::Known(age),
                tracked: true,
            } => write!(
                f,
                " was abandoned by shutdown, still running after {age:.1?} as a tracked future, \
                 which only the code that polls it can stop"
            ),
            Kind::Abandoned {
                age: Age::Known(age),
                tracked: false,
            } => write!(
                f,
                " was abandoned by shutdown, still running on a blocking thread after {age:.1?}"
            ),
            Kind::Abandoned { .. } => {
                f.write_str(" was abandoned by shutdown, blocking its thread inside its first poll")
            }
            Kind::Dropped {
                age: Age::Known(age),
            } => write!(
                f,
                " was dropped unfinished after running {age:.1?}: its runtime shut down before \
                 the supervisor did"
            ),
            Kind::Dropped { age: _ } => f.write_str(
                " was dropped unfinished before it started: its runtime shut down before the \
                 supervisor did",
            ),
        }
    }
}
