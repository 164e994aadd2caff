//! What a finished shutdown reports.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::handle::TaskId;

/// A task named in a [`ShutdownReport`]: one that shutdown aborted or abandoned.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let supervisor = TaskSupervisor::builder()
///     .shutdown_timeout(Duration::from_secs(1))
///     .cancel_grace(Duration::ZERO)
///     .build();
/// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
/// let report = supervisor.shutdown().await;
/// let stuck = &report.aborted_tasks()[0];
/// assert_eq!(stuck.name(), Some("stuck"));
/// assert_eq!(stuck.age(), Duration::from_secs(1));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) age: Age,
    /// A future its owner polls ([`track_future`](crate::TaskSupervisor::track_future)),
    /// which shutdown cannot abort.
    pub(crate) tracked: bool,
}

/// How long a task named in a report had been running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Age {
    /// Counted from an async task's first suspension, or a blocking task's spawn.
    Known(Duration),
    /// Still waiting for its first poll.
    NotStarted,
    /// Inside its first poll: it never suspended, so its start was never recorded (a clock
    /// read per spawn would cost every short task).
    FirstPoll,
}

impl TaskRecord {
    /// The task's id.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(2))
    ///     .cancel_grace(Duration::ZERO)
    ///     .build();
    /// let handle = supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// let record = &report.aborted_tasks()[0];
    /// assert_eq!(record.id(), handle.id());
    /// # }
    /// ```
    #[must_use]
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The task's name, when it was spawned with one.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(2))
    ///     .cancel_grace(Duration::ZERO)
    ///     .build();
    /// let handle = supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// let record = &report.aborted_tasks()[0];
    /// assert_eq!(record.name(), Some("stuck"));
    /// # }
    /// ```
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// How long the task had been running when shutdown aborted or abandoned it, counted for
    /// async tasks from their first suspension; zero for a task that had not started (see
    /// [`is_started`](Self::is_started)) and for one still inside its first poll, which had
    /// never suspended.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(2))
    ///     .cancel_grace(Duration::ZERO)
    ///     .build();
    /// let handle = supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// let record = &report.aborted_tasks()[0];
    /// assert_eq!(record.age(), Duration::from_secs(2));
    /// # }
    /// ```
    #[must_use]
    pub fn age(&self) -> Duration {
        match self.age {
            Age::Known(age) => age,
            Age::NotStarted | Age::FirstPoll => Duration::ZERO,
        }
    }

    /// Returns `false` for an async task that had never suspended when shutdown aborted it:
    /// one still queued for its first poll, typically a follow-up spawned during the drain.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(2))
    ///     .cancel_grace(Duration::ZERO)
    ///     .build();
    /// let handle = supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// let record = &report.aborted_tasks()[0];
    /// assert!(record.is_started());
    /// # }
    /// ```
    #[must_use]
    pub fn is_started(&self) -> bool {
        self.age != Age::NotStarted
    }

    /// Whether the task is a future its owner polls, from
    /// [`track_future`](crate::TaskSupervisor::track_future): shutdown cannot abort it, so
    /// it is listed as abandoned if it is still alive at the abort, and runs on.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::ZERO)
    ///     .build();
    /// let inline = supervisor.task("inline").track_future(std::future::pending::<()>()).unwrap();
    /// let report = supervisor.shutdown().await;
    /// assert!(report.abandoned_tasks()[0].is_tracked());
    /// # drop(inline);
    /// # }
    /// ```
    #[must_use]
    pub fn is_tracked(&self) -> bool {
        self.tracked
    }
}

impl fmt::Display for TaskRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (task {}, ", self.id)?,
            None => write!(f, "task {} (", self.id)?,
        }
        match self.age {
            Age::Known(age) => write!(f, "{age:.1?}")?,
            Age::NotStarted => f.write_str("not started")?,
            Age::FirstPoll => f.write_str("in its first poll")?,
        }
        f.write_str(if self.tracked { ", tracked)" } else { ")" })
    }
}

/// How a supervisor's shutdown went: what happened to every task that was running when it
/// began or was spawned during it.
///
/// Each such task is counted once, by the phase in which it ended:
/// - [`completed`](Self::completed): ended on its own during the drain, whatever its outcome,
///   panics included;
/// - [`cancelled`](Self::cancelled): ended after the cancellation signal, within the grace;
/// - [`aborted`](Self::aborted): still running when the drain ran out, for a task without a
///   context (it cannot see the cancellation signal, so it gets no grace), or when the grace
///   ran out, for a task with one, and aborted. As with
///   tokio's `JoinHandle::abort`, an async task stops at its next poll: one blocking its
///   thread inside a poll runs on until that poll returns;
/// - [`abandoned`](Self::abandoned): tasks still running on their thread when the shutdown ended,
///   which nothing can stop, so shutdown returned without them: blocking tasks, and async tasks
///   blocking their thread inside their very first poll (a bug in the task: it should `.await`
///   or use `spawn_blocking`). Those are named when their poll returns before the report is
///   written, and only counted when it does not. The count without names also holds tasks
///   that were never polled because they wait behind such a task: tokio keeps the task a
///   worker woke last in a slot of that worker's own, which no other worker may take, so a
///   worker blocked in a poll holds it too. Nothing tells the two apart while the thread is
///   blocked, hence the wording of the `Display`: "held up in or before their first poll by a
///   blocked thread".
///
/// Its `Display` is one line, which the supervisor logs: the counts, then the first ten
/// aborted and abandoned tasks with their ages and how many more there are. The alternate
/// form, `{report:#}`, names every task; [`aborted_tasks`](Self::aborted_tasks) and
/// [`abandoned_tasks`](Self::abandoned_tasks) give them all as values.
///
/// # Examples
///
/// ```
/// use background_tasks::TaskSupervisor;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let supervisor = TaskSupervisor::new();
/// supervisor.spawn(async {}).unwrap();
/// let report = supervisor.shutdown().await;
/// assert_eq!(report.completed(), 1);
/// assert!(report.is_clean());
/// assert!(report.to_string().contains("1 completed, 0 cancelled, 0 aborted, 0 abandoned"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    pub(crate) completed: usize,
    pub(crate) cancelled: usize,
    // Shared, not copied: the report is cloned for the shutdown log, for every `shutdown` caller
    // and for whoever forwards it (serve), and a shutdown that aborts 200 000 tasks lists
    // 200 000 records.
    pub(crate) aborted: Arc<TaskList>,
    pub(crate) abandoned: Arc<TaskList>,
    /// Async tasks that had not reported when the report was written: inside a first poll that
    /// blocks its thread, or queued behind one on that thread. Neither ever suspended, so
    /// nothing could name them.
    pub(crate) stuck: usize,
    pub(crate) elapsed: Duration,
}

impl ShutdownReport {
    /// How many tasks ended on their own during the drain phase, panics included.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn(tokio::time::sleep(Duration::from_millis(10))).unwrap();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.completed(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn completed(&self) -> usize {
        self.completed
    }

    /// How many tasks ended during the cancel phase, after the cancellation signal.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn(async {}).unwrap();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.cancelled(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn cancelled(&self) -> usize {
        self.cancelled
    }

    /// How many tasks were aborted when the budget ran out.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn(async {}).unwrap();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.aborted(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn aborted(&self) -> usize {
        self.aborted.len()
    }

    /// How many tasks were still running on their thread when the budget ran out: blocking
    /// tasks, and async tasks blocking their thread inside a poll.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_millis(10))
    ///     .cancel_grace(Duration::from_millis(10))
    ///     .build();
    /// supervisor.task("resize").spawn_blocking(|| std::thread::sleep(Duration::from_millis(500))).unwrap();
    /// # tokio::time::sleep(Duration::from_millis(5)).await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.abandoned(), 1);
    /// # }
    /// ```
    #[must_use]
    pub fn abandoned(&self) -> usize {
        self.abandoned.len() + self.stuck
    }

    /// The tasks that were aborted, by id.
    ///
    /// Sorted by the first call (or by the first `{report:#}`), not when the report is
    /// written: the one-line `Display` names the first ten only, and sorting 200 000 records
    /// would delay the report, and the exit of a process that waits for it, by milliseconds.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn(async {}).unwrap();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.aborted_tasks()[0].name(), Some("stuck"));
    /// # }
    /// ```
    #[must_use]
    pub fn aborted_tasks(&self) -> &[TaskRecord] {
        self.aborted.by_id()
    }

    /// The tasks that were abandoned, by id (sorted by the first call, as
    /// [`aborted_tasks`](Self::aborted_tasks)). Async tasks stuck in their very first poll
    /// cannot be named, and are only counted in [`abandoned`](Self::abandoned).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_millis(10))
    ///     .cancel_grace(Duration::from_millis(10))
    ///     .build();
    /// supervisor.task("resize").spawn_blocking(|| std::thread::sleep(Duration::from_millis(500))).unwrap();
    /// # tokio::time::sleep(Duration::from_millis(5)).await;
    /// let report = supervisor.shutdown().await;
    /// assert_eq!(report.abandoned_tasks()[0].name(), Some("resize"));
    /// # }
    /// ```
    #[must_use]
    pub fn abandoned_tasks(&self) -> &[TaskRecord] {
        self.abandoned.by_id()
    }

    /// How long the shutdown took, from its start to its report.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use background_tasks::TaskSupervisor;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let supervisor = TaskSupervisor::builder()
    ///     .shutdown_timeout(Duration::from_secs(1))
    ///     .cancel_grace(Duration::from_secs(1))
    ///     .build();
    /// supervisor.spawn(async {}).unwrap();
    /// supervisor.spawn_with(|ctx| async move { ctx.cancelled().await }).unwrap();
    /// supervisor.task("stuck").spawn(std::future::pending::<()>()).unwrap();
    /// # tokio::task::yield_now().await;
    /// let report = supervisor.shutdown().await;
    /// // The stuck task has no context: it is aborted when the drain runs out, and the task
    /// // with one ends as soon as it is cancelled, so the grace is not waited out.
    /// assert_eq!(report.elapsed(), Duration::from_secs(1));
    /// # }
    /// ```
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Returns `true` when every task ended on its own during the drain: nothing was
    /// cancelled, aborted or abandoned.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// supervisor.spawn(async {}).unwrap();
    /// assert!(supervisor.shutdown().await.is_clean());
    /// # }
    /// ```
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.cancelled == 0 && self.aborted() == 0 && self.abandoned() == 0
    }
}

/// How many tasks of each list the report's `Display` names; its alternate form names all.
const NAMED: usize = 10;

/// One line, naming ten tasks of each list; `{:#}` names them all (see [`ShutdownReport`]).
impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "background tasks shut down in {:.1?}: {} completed, {} cancelled, {} aborted, {} abandoned",
            self.elapsed,
            self.completed,
            self.cancelled,
            self.aborted(),
            self.abandoned(),
        )?;
        // A shutdown that aborts thousands of tasks must not log a line of megabytes, nor
        // spend the time past its budget formatting it.
        for (label, tasks) in [("aborted", &*self.aborted), ("abandoned", &*self.abandoned)] {
            // The one line needs the first ten only, which the list keeps apart: it does not
            // sort 200 000 records to name ten.
            let named = if f.alternate() {
                tasks.by_id()
            } else {
                &tasks.head
            };
            if let Some((first, rest)) = named.split_first() {
                write!(f, "; {label}: {first}")?;
                for task in rest {
                    write!(f, ", {task}")?;
                }
                let more = tasks.len() - named.len();
                if more > 0 {
                    write!(f, " and {more} more")?;
                }
            }
        }
        match self.stuck {
            0 => Ok(()),
            1 => f.write_str(
                "; 1 unnamed task held up in or before its first poll by a blocked thread",
            ),
            n => write!(
                f,
                "; {n} unnamed tasks held up in or before their first poll by a blocked thread"
            ),
        }
    }
}

/// One list of a [`ShutdownReport`], in id order, sorted only when it is first read in full.
///
/// The walks list tasks shard by shard, not by id. Sorting the list as the report was written
/// took 14 % of the time from the end of the budget to the report line with 200 000 stuck
/// tasks, for a line that names ten of them: the list keeps its first ten by id apart (one
/// pass, when it is made), and sorts the rest on the first call that needs them all
/// ([`by_id`](Self::by_id): `aborted_tasks()`, `{report:#}`, `Debug`, `==`, and the driver's
/// `on_failure` calls, which come after the report is published).
pub(crate) struct TaskList {
    len: usize,
    /// The first [`NAMED`] tasks by id, in order: what the one-line `Display` names.
    head: Box<[TaskRecord]>,
    /// The tasks as listed, until the first call of `by_id` moves them into `sorted`. A
    /// lock, not a cell: two threads may read a shared report for the first time at once.
    listed: Mutex<Vec<TaskRecord>>,
    sorted: OnceLock<Box<[TaskRecord]>>,
}

impl TaskList {
    pub(crate) fn new(listed: Vec<TaskRecord>) -> Self {
        let head = smallest(listed.iter().enumerate(), NAMED, |task| task.id)
            .into_iter()
            .map(|index| listed[index].clone())
            .collect();
        Self {
            len: listed.len(),
            head,
            listed: Mutex::new(listed),
            sorted: OnceLock::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every task, by id: sorted by the first call.
    pub(crate) fn by_id(&self) -> &[TaskRecord] {
        self.sorted.get_or_init(|| {
            // Taken, not cloned: the list is never needed as listed again. No critical
            // section here runs user code, so a poisoned lock holds whole data.
            let mut tasks = std::mem::take(&mut *self.lock_listed());
            // Stable: the walks list each shard's tasks mostly in id order, runs that the
            // stable sort merges rather than sorting from scratch. Ids are unique, so the
            // order is the same as an unstable sort's.
            tasks.sort_by_key(|task| task.id);
            tasks.into_boxed_slice()
        })
    }

    /// The last `count` tasks by id, in order, without sorting the list if it is not sorted
    /// yet: what the driver hands to the recent failures when there is no `on_failure`.
    pub(crate) fn last_by_id(&self, count: usize) -> Vec<TaskRecord> {
        if self.sorted.get().is_none() {
            let listed = self.lock_listed();
            // Not moved into `sorted` yet (the lock orders this with the move).
            if listed.len() == self.len {
                // From the end, where the walks left each shard's last ids: most tasks then
                // fall short of the `count` kept at once, and move nothing.
                let from_the_end = listed.iter().enumerate().rev();
                let mut last: Vec<_> = smallest(from_the_end, count, |task| Reverse(task.id))
                    .into_iter()
                    .map(|index| listed[index].clone())
                    .collect();
                last.reverse();
                return last;
            }
        }
        let sorted = self.by_id();
        sorted[sorted.len().saturating_sub(count)..].to_vec()
    }

    fn lock_listed(&self) -> std::sync::MutexGuard<'_, Vec<TaskRecord>> {
        self.listed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The indices of the `count` tasks with the smallest keys, in key order: one pass, which
/// moves no record, and inserts into a list of `count` only when a task beats its last.
fn smallest<'a, K: Ord>(
    tasks: impl Iterator<Item = (usize, &'a TaskRecord)>,
    count: usize,
    key: impl Fn(&TaskRecord) -> K,
) -> Vec<usize> {
    let mut best: Vec<(K, usize)> = Vec::with_capacity(count.min(tasks.size_hint().0) + 1);
    for (index, task) in tasks {
        let task_key = key(task);
        if best.len() == count && best.last().is_none_or(|(last, _)| task_key >= *last) {
            continue;
        }
        let at = best.partition_point(|(other, _)| *other < task_key);
        best.insert(at, (task_key, index));
        best.truncate(count);
    }
    best.into_iter().map(|(_, index)| index).collect()
}

impl From<Vec<TaskRecord>> for TaskList {
    fn from(listed: Vec<TaskRecord>) -> Self {
        Self::new(listed)
    }
}

impl FromIterator<TaskRecord> for TaskList {
    fn from_iter<I: IntoIterator<Item = TaskRecord>>(tasks: I) -> Self {
        Self::new(tasks.into_iter().collect())
    }
}

impl PartialEq for TaskList {
    fn eq(&self, other: &Self) -> bool {
        self.by_id() == other.by_id()
    }
}

impl Eq for TaskList {}

impl fmt::Debug for TaskList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_id()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list<const N: usize>(tasks: [TaskRecord; N]) -> Arc<TaskList> {
        Arc::new(TaskList::from(Vec::from(tasks)))
    }

    #[test]
    fn display_names_aborted_and_abandoned_tasks_with_their_age() {
        let report = ShutdownReport {
            completed: 3,
            cancelled: 1,
            aborted: list([
                TaskRecord {
                    id: TaskId(4),
                    name: Some("send-mail".into()),
                    age: Age::Known(Duration::from_millis(6000)),
                    tracked: false,
                },
                TaskRecord {
                    id: TaskId(7),
                    name: None,
                    age: Age::NotStarted,
                    tracked: false,
                },
            ]),
            abandoned: list([
                TaskRecord {
                    id: TaskId(9),
                    name: Some("resize".into()),
                    age: Age::Known(Duration::from_secs(6)),
                    tracked: false,
                },
                TaskRecord {
                    id: TaskId(11),
                    name: Some("inline-save".into()),
                    age: Age::Known(Duration::from_secs(5)),
                    tracked: true,
                },
            ]),
            stuck: 0,
            elapsed: Duration::from_millis(6002),
        };
        assert_eq!(
            report.to_string(),
            "background tasks shut down in 6.0s: 3 completed, 1 cancelled, 2 aborted, \
             2 abandoned; aborted: send-mail (task 4, 6.0s), task 7 (not started); \
             abandoned: resize (task 9, 6.0s), inline-save (task 11, 5.0s, tracked)"
        );
        assert!(!report.is_clean());
        assert_eq!((report.aborted(), report.abandoned()), (2, 2));
    }

    #[test]
    fn display_names_the_first_ten_tasks_of_a_list_and_the_alternate_form_all() {
        let record = |id| TaskRecord {
            id: TaskId(id),
            name: Some("job".into()),
            age: Age::Known(Duration::from_secs(3)),
            tracked: false,
        };
        let report = ShutdownReport {
            completed: 0,
            cancelled: 0,
            aborted: Arc::new((1..=12).map(record).collect()),
            abandoned: list([record(13)]),
            stuck: 0,
            elapsed: Duration::from_secs(3),
        };
        let named = |tasks: std::ops::RangeInclusive<u64>| {
            tasks
                .map(|id| format!("job (task {id}, 3.0s)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let counts = "background tasks shut down in 3.0s: 0 completed, 0 cancelled, \
                      12 aborted, 1 abandoned";
        assert_eq!(
            report.to_string(),
            format!(
                "{counts}; aborted: {} and 2 more; abandoned: job (task 13, 3.0s)",
                named(1..=10)
            )
        );
        assert_eq!(
            format!("{report:#}"),
            format!(
                "{counts}; aborted: {}; abandoned: job (task 13, 3.0s)",
                named(1..=12)
            )
        );
    }

    #[test]
    fn display_cuts_each_list_after_ten_tasks_only() {
        let record = |id| TaskRecord {
            id: TaskId(id),
            name: None,
            age: Age::NotStarted,
            tracked: false,
        };
        for (tasks, more) in [(1, ""), (10, ""), (11, " and 1 more")] {
            let list = |first: u64| Arc::new((first..first + tasks).map(record).collect());
            let report = ShutdownReport {
                completed: 0,
                cancelled: 0,
                aborted: list(1),
                abandoned: list(100),
                stuck: 0,
                elapsed: Duration::ZERO,
            };
            let line = report.to_string();
            let aborted_more = format!("task 10 (not started){more}; abandoned");
            let last_abandoned = 100 + tasks.min(10) - 1;
            assert!(
                line.ends_with(&format!("task {last_abandoned} (not started){more}")),
                "{tasks} abandoned: {line}"
            );
            if tasks >= 10 {
                assert!(line.contains(&aborted_more), "{tasks} aborted: {line}");
            }
            assert_eq!(
                line.matches("(not started)").count(),
                2 * tasks.min(10) as usize,
                "{line}"
            );
            if tasks <= 10 {
                assert_eq!(format!("{report:#}"), line, "nothing to cut");
            }
        }
    }

    /// Ids in the order a walk of four shards lists them: each shard's tasks in id order,
    /// shard after shard, so that neither end of the list holds its smallest or largest ids.
    fn walk_order(tasks: u64) -> Vec<u64> {
        (0..4)
            .flat_map(|shard| (1..=tasks).filter(move |id| id % 4 == shard))
            .collect()
    }

    fn records(ids: &[u64]) -> Vec<TaskRecord> {
        ids.iter()
            .map(|&id| TaskRecord {
                id: TaskId(id),
                name: None,
                age: Age::NotStarted,
                tracked: false,
            })
            .collect()
    }

    fn ids(tasks: &[TaskRecord]) -> Vec<u64> {
        tasks.iter().map(|task| task.id.as_u64()).collect()
    }

    #[test]
    fn a_list_in_walk_order_is_read_by_id_and_its_line_names_the_ten_smallest_ids() {
        let list = TaskList::new(records(&walk_order(1_000)));
        assert_eq!(list.len(), 1_000);
        assert_eq!(ids(&list.head), (1..=10).collect::<Vec<_>>());
        assert!(list.sorted.get().is_none(), "not sorted to name ten");
        let report = ShutdownReport {
            completed: 0,
            cancelled: 0,
            aborted: Arc::new(list),
            abandoned: Arc::new(TaskList::new(records(&[9, 3, 5]))),
            stuck: 0,
            elapsed: Duration::ZERO,
        };
        let named = |ids: &[u64]| {
            ids.iter()
                .map(|id| format!("task {id} (not started)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let counts = "background tasks shut down in 0.0ns: 0 completed, 0 cancelled, 1000 \
                      aborted, 3 abandoned";
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(
            report.to_string(),
            format!(
                "{counts}; aborted: {} and 990 more; abandoned: {}",
                named(&ten),
                named(&[3, 5, 9])
            )
        );
        assert!(
            report.aborted.sorted.get().is_none(),
            "the one line sorts nothing"
        );
        let all: Vec<u64> = (1..=1_000).collect();
        assert_eq!(ids(report.aborted_tasks()), all);
        assert_eq!(ids(report.abandoned_tasks()), [3, 5, 9]);
        assert_eq!(
            format!("{report:#}"),
            format!(
                "{counts}; aborted: {}; abandoned: {}",
                named(&all),
                named(&[3, 5, 9])
            )
        );
    }

    #[test]
    fn the_last_tasks_by_id_are_the_same_before_and_after_the_list_is_sorted() {
        let list = TaskList::new(records(&walk_order(100)));
        let last = |count| ids(&list.last_by_id(count));
        assert_eq!(last(3), [98, 99, 100]);
        assert_eq!(last(0), Vec::<u64>::new());
        assert_eq!(last(200), (1..=100).collect::<Vec<_>>());
        assert!(list.sorted.get().is_none(), "found without sorting");
        let _ = list.by_id();
        assert_eq!(last(3), [98, 99, 100]);
        assert_eq!(last(200), (1..=100).collect::<Vec<_>>());
        let empty = TaskList::new(Vec::new());
        assert!(empty.last_by_id(32).is_empty() && empty.head.is_empty());
    }

    #[test]
    fn lists_compare_and_debug_by_id_whatever_order_they_were_listed_in() {
        let walked = TaskList::new(records(&walk_order(50)));
        let in_order = TaskList::new(records(&(1..=50).collect::<Vec<_>>()));
        assert_eq!(walked, in_order);
        assert_ne!(walked, TaskList::new(records(&[1, 2])));
        assert_eq!(format!("{walked:?}"), format!("{:?}", in_order.by_id()));
    }
}
