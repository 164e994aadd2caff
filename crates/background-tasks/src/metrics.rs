//! The `metrics` feature: the supervisor's tasks through the `metrics` facade, for any
//! exporter (Prometheus, OpenTelemetry, StatsD).
//!
//! Per task, as it happens: `background_tasks_spawned_total{name}`,
//! `background_tasks_finished_total{name,outcome}` and
//! `background_tasks_duration_seconds{name}`; per refusal,
//! `background_tasks_refused_total{reason}`. The two gauges, `background_tasks_running` and
//! `background_tasks_oldest_age_seconds`, are set by
//! [`TaskSupervisor::record_metrics`](crate::TaskSupervisor::record_metrics), which an
//! exporter's scrape handler calls, so that no spawn pays for them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder, SharedString};

use crate::names::{self, Names};

/// How many distinct task names get a label value of their own; later ones share
/// [`METRIC_LABEL_OTHER`]. Names label metrics, and every label value is a time series the metrics backend
/// keeps: names must come from a small, fixed set (`send-mail`, `resize-image`), never carry
/// ids or user input.
pub const METRIC_NAMES_LIMIT: usize = 100;

/// The `name` label of tasks spawned without a name.
pub const METRIC_LABEL_UNNAMED: &str = "unnamed";

/// The `name` label of tasks whose name came after [`METRIC_NAMES_LIMIT`] others.
pub const METRIC_LABEL_OTHER: &str = "other";

/// The bounded set of names used as labels, each with its series.
#[derive(Debug)]
pub(crate) struct Labels {
    names: RwLock<HashMap<String, Arc<Series>>>,
    /// Names given as a `&'static str` (most are: `task("send-mail")`), interned by address as
    /// the supervisor interns task names, so that a task finds its series by comparing a few
    /// addresses, without a lock, a hash or a comparison of text: the map's read lock and
    /// SipHash were 3 % of the quickstart's instructions per request (docs/benchmarks.md).
    interned: Names,
    /// The series of each interned name, by its index less one; set from the map on first use.
    by_index: Box<[OnceLock<Arc<Series>>]>,
    unnamed: OnceLock<Series>,
    other: OnceLock<Arc<Series>>,
    warned: AtomicBool,
}

impl Default for Labels {
    fn default() -> Self {
        Self {
            names: RwLock::default(),
            interned: Names::default(),
            by_index: (0..names::CAPACITY).map(|_| OnceLock::new()).collect(),
            unnamed: OnceLock::new(),
            other: OnceLock::new(),
            warned: AtomicBool::new(false),
        }
    }
}

impl Labels {
    /// The `name` label of the tasks named `name`.
    pub(crate) fn label_of(&self, name: &str) -> SharedString {
        self.with_mapped(name, |series| series.label.clone())
    }

    /// Runs `f` with the series of a task named `name`.
    #[inline]
    fn with_series<T>(&self, name: Option<&Cow<'static, str>>, f: impl FnOnce(&Series) -> T) -> T {
        match name {
            None => f(self
                .unnamed
                .get_or_init(|| Series::new(SharedString::const_str(METRIC_LABEL_UNNAMED)))),
            Some(Cow::Borrowed(name)) => {
                // `None` once every slot holds another name: those go through the map.
                let slot = self
                    .interned
                    .index(name)
                    .and_then(|index| self.by_index.get(usize::from(index) - 1));
                match slot {
                    Some(slot) => f(slot.get_or_init(|| self.with_mapped(name, Arc::clone))),
                    None => self.with_mapped(name, |series| f(series)),
                }
            }
            Some(Cow::Owned(name)) => self.with_mapped(name, |series| f(series)),
        }
    }

    /// Runs `f` with the series of `name` from the map, adding it if there is room.
    fn with_mapped<T>(&self, name: &str, f: impl FnOnce(&Arc<Series>) -> T) -> T {
        // A read lock on the common path: the map stops changing once every name was seen.
        if let Some(series) = self
            .names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
        {
            return f(series);
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if names.len() < METRIC_NAMES_LIMIT || names.contains_key(name) {
            let series = names
                .entry(name.to_owned())
                .or_insert_with(|| Arc::new(Series::new(SharedString::from(name.to_owned()))));
            return f(series);
        }
        drop(names);
        // Relaxed: a flag that only keeps the warning to one line.
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = METRIC_NAMES_LIMIT,
                task.name = name,
                "more than {METRIC_NAMES_LIMIT} distinct background task names: the metrics of \
                 this one and of every new name from now on are labelled name=\"{METRIC_LABEL_OTHER}\". Task \
                 names label metrics, and each value is a time series your metrics backend \
                 keeps: name tasks after what they do (\"send-mail\"), never with ids or user \
                 input"
            );
        }
        f(self
            .other
            .get_or_init(|| Arc::new(Series::new(SharedString::const_str(METRIC_LABEL_OTHER)))))
    }

    pub(crate) fn spawned(&self, name: Option<&Cow<'static, str>>) {
        self.with_series(name, |series| {
            metrics::with_recorder(|recorder| {
                series.spawned.increment(recorder, &series.keys.spawned);
            });
        });
    }

    pub(crate) fn finished(
        &self,
        name: Option<&Cow<'static, str>>,
        outcome: Outcome,
        duration: Duration,
    ) {
        self.with_series(name, |series| {
            let index = outcome as usize;
            // One look-up of the recorder for both metrics.
            metrics::with_recorder(|recorder| {
                series.finished[index].increment(recorder, &series.keys.finished[index]);
                series
                    .duration
                    .record(recorder, &series.keys.duration, duration.as_secs_f64());
            });
        });
    }
}

/// The metrics of one `name` label: their keys, built once, and the handles their recorder
/// gave for them.
#[derive(Debug)]
struct Series {
    label: SharedString,
    keys: Keys,
    spawned: Cached<Counter>,
    finished: [Cached<Counter>; Outcome::ALL.len()],
    duration: Cached<Histogram>,
}

#[derive(Debug)]
struct Keys {
    spawned: Key,
    finished: [Key; Outcome::ALL.len()],
    duration: Key,
}

impl Series {
    fn new(label: SharedString) -> Self {
        let name = || Label::new("name", label.clone());
        Self {
            keys: Keys {
                spawned: Key::from_parts("background_tasks_spawned_total", vec![name()]),
                finished: Outcome::ALL.map(|outcome| {
                    Key::from_parts(
                        "background_tasks_finished_total",
                        vec![
                            name(),
                            Label::from_static_parts("outcome", outcome.as_str()),
                        ],
                    )
                }),
                duration: Key::from_parts("background_tasks_duration_seconds", vec![name()]),
            },
            label,
            spawned: Cached::default(),
            finished: Default::default(),
            duration: Cached::default(),
        }
    }
}

/// What the `counter!` and `histogram!` macros would register these metrics with.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// A handle of one metric, kept with the address of the recorder that gave it, so that a task
/// records without building a [`Key`] and looking it up in the recorder's registry.
///
/// A handle records into the recorder that registered it, and nowhere else; the recorder a
/// task's metrics should go to is the one [`metrics::with_recorder`] hands out as the task
/// spawns or ends: this thread's local recorder, else the global one, else a no-op. An app may
/// install its global recorder after it built the supervisor (the quickstart does), and tests
/// switch local recorders: so each use compares the recorder with the one the handle came
/// from and registers again when they differ, as the `counter!` macro would have each time.
/// A handle of a zero-sized recorder (the no-op is one) is never kept: every zero-sized value
/// may share one address, which then says nothing about which recorder it is.
///
/// The global recorder is never freed, so its address names it for good. A thread-local
/// recorder is named by its address only while it is in place: a supervisor that records
/// under one local recorder, and then under another that was put at the same address after
/// the first was dropped, would keep the first's handles. Only tests use local recorders, and
/// a test that does this should build its supervisor inside the recorder's scope.
#[derive(Debug)]
struct Cached<H> {
    // The handle of the first recorder with an address that recorded this metric: in an app,
    // its global recorder, for good. Read without a lock, as every task spawns and ends.
    first: OnceLock<(usize, H)>,
    // The handle of the last other recorder (a test's next local recorder). A lock, not an
    // atomic swap: the handle is an `Arc` to clone; written only when that recorder changes.
    other: RwLock<Option<(usize, H)>>,
}

// By hand: a derive would ask `H: Default`.
impl<H> Default for Cached<H> {
    fn default() -> Self {
        Self {
            first: OnceLock::new(),
            other: RwLock::new(None),
        }
    }
}

impl<H> Cached<H> {
    /// Records with the handle `recorder` gave for `key`, registering it first if this is not
    /// the recorder the kept handles came from.
    fn with(
        &self,
        recorder: &dyn Recorder,
        key: &Key,
        register: impl Fn(&dyn Recorder, &Key) -> H,
        record: impl FnOnce(&H),
    ) {
        if std::mem::size_of_val(recorder) == 0 {
            return record(&register(recorder, key));
        }
        // The data address of the recorder: a global recorder is never freed, so its
        // address names it; a thread-local one is named by it while it is in place.
        let address = std::ptr::from_ref(recorder).cast::<()>() as usize;
        let (from, handle) = self
            .first
            .get_or_init(|| (address, register(recorder, key)));
        if *from == address {
            return record(handle);
        }
        if let Some((_, handle)) = self
            .other
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(from, _)| *from == address)
        {
            return record(handle);
        }
        let handle = register(recorder, key);
        record(&handle);
        *self.other.write().unwrap_or_else(PoisonError::into_inner) = Some((address, handle));
    }
}

impl Cached<Counter> {
    fn increment(&self, recorder: &dyn Recorder, key: &Key) {
        self.with(
            recorder,
            key,
            |recorder, key| recorder.register_counter(key, &METADATA),
            |counter| counter.increment(1),
        );
    }
}

impl Cached<Histogram> {
    fn record(&self, recorder: &dyn Recorder, key: &Key, value: f64) {
        self.with(
            recorder,
            key,
            |recorder, key| recorder.register_histogram(key, &METADATA),
            |histogram| histogram.record(value),
        );
    }
}

/// How a task ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Completed,
    Panicked,
    Cancelled,
    Aborted,
    Abandoned,
    TimedOut,
}

impl Outcome {
    /// Every outcome, in the order of their discriminants: `outcome as usize` indexes it.
    const ALL: [Outcome; 6] = [
        Outcome::Completed,
        Outcome::Panicked,
        Outcome::Cancelled,
        Outcome::Aborted,
        Outcome::Abandoned,
        Outcome::TimedOut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Panicked => "panicked",
            Outcome::Cancelled => "cancelled",
            Outcome::Aborted => "aborted",
            Outcome::Abandoned => "abandoned",
            Outcome::TimedOut => "timed_out",
        }
    }
}

/// Counts a refused spawn; `reason` is `shutting_down`, `at_capacity` or `queue_full`.
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("background_tasks_refused_total", "reason" => reason).increment(1);
}

/// Sets the gauges: the running tasks, and the age of the oldest.
pub(crate) fn gauges(running: usize, oldest: Option<Duration>) {
    metrics::gauge!("background_tasks_running").set(running as f64);
    metrics::gauge!("background_tasks_oldest_age_seconds")
        .set(oldest.map_or(0.0, |age| age.as_secs_f64()));
}

impl crate::TaskSupervisor {
    /// Sets the gauges of the `metrics` feature: `background_tasks_running`, the tasks running
    /// now, `background_tasks_oldest_age_seconds`, the age of the oldest (0 when none has
    /// started), and `background_tasks_waiting{name}`, the tasks of each limited name waiting
    /// for a place ([`SupervisorBuilder::limit`](crate::SupervisorBuilder::limit)). Call it where the metrics are read, such as a Prometheus scrape handler, so
    /// that the gauges cost nothing between reads: it walks the running tasks as
    /// [`snapshot`](Self::snapshot) does.
    ///
    /// The counters and the histogram are recorded as tasks spawn and end; see the crate docs.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let supervisor = background_tasks::TaskSupervisor::new();
    /// // In the handler that renders the metrics, before rendering them:
    /// supervisor.record_metrics();
    /// # }
    /// ```
    pub fn record_metrics(&self) {
        let snapshot = self.snapshot_oldest(0);
        gauges(snapshot.running, snapshot.oldest_age);
        // One series per limited name, set even at zero so that a drained queue reads 0.
        for (name, limit) in self.inner.config.limits.iter() {
            metrics::gauge!("background_tasks_waiting", "name" => self.inner.labels.label_of(name))
                .set(limit.waiting() as f64);
        }
    }
}
