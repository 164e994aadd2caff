//! How a task is admitted, registered, run and accounted for when it ends.

use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::task::Poll;

use tokio::runtime::Handle;
use tokio::time::Instant;
use tracing::{Instrument, Span};

use crate::error::{SpawnError, panic_message};
use crate::failure::{Kind, TaskFailure};
use crate::handle::{Failure, TaskHandle, TaskId};
use crate::registry::{Blocking, Entry};
use crate::state::{Origin, Phase, Refused};
use crate::supervisor::Inner;

impl Inner {
    /// Spawns the future `make` builds for the new task's id.
    #[track_caller]
    pub(crate) fn spawn_async<F, M>(
        self: &Arc<Self>,
        origin: Origin,
        name: Option<Cow<'static, str>>,
        make: M,
    ) -> Result<TaskHandle<F::Output>, SpawnError>
    where
        M: FnOnce(TaskId) -> F,
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let runtime = current_runtime();
        let admission = self.admit(origin)?;
        let id = self.next_id();
        let future = make(id);
        let span = task_span(id, name.as_deref());
        let mut slab = self.registry.lock(id);
        // Checked under the shard lock that the shutdown report walks: a task admitted during
        // the drain but registered only now, after the report was written, must not run
        // unreported.
        if self.state.phase() == Phase::Done {
            // The shard lock goes first: giving the admission back may take the shutdown lock,
            // which is always taken before a shard lock.
            drop(slab);
            return Err(SpawnError::ShuttingDown);
        }
        let guard = TaskGuard::new(self.clone(), id, slab.next_key());
        let join = runtime.spawn(run_async(guard, future).instrument(span));
        slab.insert(Entry {
            id,
            name,
            started: Instant::now(),
            abort: join.abort_handle(),
            blocking: None,
        });
        drop(slab);
        admission.keep();
        Ok(TaskHandle::new(id, join))
    }

    /// Spawns the closure `make` builds for the new task's id on tokio's blocking pool.
    #[track_caller]
    pub(crate) fn spawn_blocking<R, F, M>(
        self: &Arc<Self>,
        origin: Origin,
        name: Option<Cow<'static, str>>,
        make: M,
    ) -> Result<TaskHandle<R>, SpawnError>
    where
        M: FnOnce(TaskId) -> F,
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let runtime = current_runtime();
        let admission = self.admit(origin)?;
        let id = self.next_id();
        let function = make(id);
        let span = task_span(id, name.as_deref());
        let mut slab = self.registry.lock(id);
        // As in `spawn_async`.
        if self.state.phase() == Phase::Done {
            drop(slab);
            return Err(SpawnError::ShuttingDown);
        }
        let guard = TaskGuard::new(self.clone(), id, slab.next_key());
        let join = runtime.spawn_blocking(move || run_blocking(guard, span, function));
        slab.insert(Entry {
            id,
            name,
            started: Instant::now(),
            abort: join.abort_handle(),
            blocking: Some(Blocking::Queued),
        });
        drop(slab);
        admission.keep();
        Ok(TaskHandle::new(id, join))
    }

    fn next_id(&self) -> TaskId {
        // Relaxed: ids only need to be unique, which any ordering of a fetch_add gives.
        TaskId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    fn admit(&self, origin: Origin) -> Result<Admission<'_>, SpawnError> {
        match self.state.admit(origin, self.config.max_tasks) {
            Ok(()) => Ok(Admission {
                inner: self,
                kept: false,
            }),
            Err(Refused::ShuttingDown) => Err(SpawnError::ShuttingDown),
            Err(Refused::AtCapacity) => Err(SpawnError::AtCapacity {
                limit: self.config.max_tasks.unwrap_or(usize::MAX),
            }),
        }
    }

    /// Counts the end of task `id`, whose registry slot is `key`, and returns its entry.
    fn end(&self, id: TaskId, key: usize) -> Option<Entry> {
        let mut slab = self.registry.lock(id);
        if let Some(left) = self.state.end_if_running() {
            // Removed under the same shard lock as the count drops, so that the registry and
            // the count agree for whoever walks the shards.
            let entry = slab.remove(key);
            drop(slab);
            self.notify_if_idle(left);
            return entry;
        }
        drop(slab);
        // Shutdown has begun: the end is counted under the shutdown lock, where phases change,
        // so that it is counted in exactly the phase it happened in.
        let mut log = self.lock_shutdown();
        let mut slab = self.registry.lock(id);
        let (phase, left) = self.state.end_in_shutdown();
        let entry = slab.remove(key);
        drop(slab);
        match phase {
            Phase::Draining => log.completed += 1,
            Phase::Cancelling => log.cancelled += 1,
            // Running cannot come back once shutdown began; tasks ending once the report is
            // written were already counted in it as aborted or abandoned.
            Phase::Running | Phase::Done => {}
        }
        drop(log);
        self.notify_if_idle(left);
        entry
    }

    /// Undoes an admission whose task was never spawned.
    fn release(&self) {
        let left = match self.state.end_if_running() {
            Some(left) => left,
            None => {
                let _log = self.lock_shutdown();
                self.state.end_in_shutdown().1
            }
        };
        self.notify_if_idle(left);
    }

    fn notify_if_idle(&self, left: usize) {
        if left != 0 {
            return;
        }
        // SeqCst fence against the SeqCst increment in `wait_until_idle`: either that waiter
        // sees the count at zero, or this load sees the waiter and wakes it. It spares the
        // notify's lock when nobody waits, the common case.
        fence(Ordering::SeqCst);
        if self.idle_waiters.load(Ordering::SeqCst) != 0 {
            self.idle.notify_waiters();
        }
    }

    fn fail(&self, failure: TaskFailure) {
        tracing::error!(
            task.id = failure.task_id().as_u64(),
            task.name = failure.task_name(),
            "{failure}"
        );
        self.report_failure(&failure);
    }

    /// Hands `failure` to the `on_failure` callback, if any.
    pub(crate) fn report_failure(&self, failure: &TaskFailure) {
        let Some(callback) = &self.config.on_failure else {
            return;
        };
        // The callback is user code: its panic must not unwind through the supervisor.
        if catch_unwind(AssertUnwindSafe(|| callback(failure))).is_err() {
            tracing::error!(
                task.id = failure.task_id().as_u64(),
                "the on_failure callback panicked while reporting: {failure}"
            );
        }
    }
}

/// The runtime to spawn on, or the panic `tokio::spawn` gives outside one.
#[track_caller]
fn current_runtime() -> Handle {
    match Handle::try_current() {
        Ok(handle) => handle,
        Err(_) => panic!(
            "TaskSupervisor: spawn called outside of a Tokio runtime; \
             spawn from async code run by a runtime (e.g. under #[tokio::main]), \
             or enter one with `Runtime::enter`"
        ),
    }
}

fn task_span(id: TaskId, name: Option<&str>) -> Span {
    tracing::info_span!("background_task", task.id = id.as_u64(), task.name = name)
}

/// An admitted task that is not spawned yet: dropped before [`Admission::keep`], it gives its
/// place back.
struct Admission<'a> {
    inner: &'a Inner,
    kept: bool,
}

impl Admission<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.inner.release();
        }
    }
}

/// Lives inside the task and accounts for its end, however it ends: returned, panicked, or
/// dropped by an abort.
struct TaskGuard {
    inner: Arc<Inner>,
    id: TaskId,
    key: usize,
    panic: Option<Option<String>>,
}

impl TaskGuard {
    fn new(inner: Arc<Inner>, id: TaskId, key: usize) -> Self {
        Self {
            inner,
            id,
            key,
            panic: None,
        }
    }

    fn panicked(&mut self, payload: &(dyn std::any::Any + Send)) {
        self.panic = Some(panic_message(payload).map(str::to_owned));
    }

    /// Marks a blocking task as started, unless shutdown aborted it first.
    fn start_blocking(&self) -> bool {
        let mut slab = self.inner.registry.lock(self.id);
        match slab.get_mut(self.key) {
            Some(Entry {
                blocking: Some(blocking),
                ..
            }) if *blocking == Blocking::Queued => {
                *blocking = Blocking::Running;
                true
            }
            _ => false,
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let entry = self.inner.end(self.id, self.key);
        if let Some(message) = self.panic.take() {
            let name = entry.and_then(|entry| entry.name);
            self.inner
                .fail(TaskFailure::new(self.id, name, Kind::Panic { message }));
        }
    }
}

async fn run_async<F: Future>(mut guard: TaskGuard, future: F) -> Result<F::Output, Failure> {
    let mut future = pin!(future);
    // A panic while polling is caught here rather than by tokio, so that it is logged and
    // reported even when nobody awaits the handle.
    let output = poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    })
    .await;
    output.map_err(|payload| {
        guard.panicked(&*payload);
        Failure::Panic(payload)
    })
    // `future` is dropped before `guard`: the task ends once its future is gone.
}

fn run_blocking<R>(
    mut guard: TaskGuard,
    span: Span,
    function: impl FnOnce() -> R,
) -> Result<R, Failure> {
    if !guard.start_blocking() {
        return Err(Failure::Aborted);
    }
    let _entered = span.entered();
    catch_unwind(AssertUnwindSafe(function)).map_err(|payload| {
        guard.panicked(&*payload);
        Failure::Panic(payload)
    })
}
