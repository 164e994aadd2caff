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
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use metrics::SharedString;

/// How many distinct task names get a label value of their own; later ones share
/// [`METRIC_LABEL_OTHER`]. Names label metrics, and every label value is a time series the metrics backend
/// keeps: names must come from a small, fixed set (`send-mail`, `resize-image`), never carry
/// ids or user input.
pub const METRIC_NAMES_LIMIT: usize = 100;

/// The `name` label of tasks spawned without a name.
pub const METRIC_LABEL_UNNAMED: &str = "unnamed";

/// The `name` label of tasks whose name came after [`METRIC_NAMES_LIMIT`] others.
pub const METRIC_LABEL_OTHER: &str = "other";

/// The bounded set of names used as labels.
#[derive(Debug, Default)]
pub(crate) struct Labels {
    names: RwLock<HashSet<String>>,
    warned: AtomicBool,
}

impl Labels {
    /// The `name` label of the tasks named `name`.
    pub(crate) fn label_of(&self, name: &str) -> SharedString {
        self.label(Some(&Cow::Owned(name.to_owned())))
    }

    /// The `name` label of a task named `name`.
    fn label(&self, name: Option<&Cow<'static, str>>) -> SharedString {
        let Some(name) = name else {
            return SharedString::const_str(METRIC_LABEL_UNNAMED);
        };
        let as_label = || match name {
            Cow::Borrowed(name) => SharedString::from(*name),
            Cow::Owned(name) => SharedString::from(name.clone()),
        };
        // A read lock on the common path: the set stops changing once every name was seen.
        if self
            .names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name.as_ref())
        {
            return as_label();
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        if names.len() < METRIC_NAMES_LIMIT {
            names.insert(name.to_string());
            return as_label();
        }
        drop(names);
        // Relaxed: a flag that only keeps the warning to one line.
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                limit = METRIC_NAMES_LIMIT,
                task.name = name.as_ref(),
                "more than {METRIC_NAMES_LIMIT} distinct background task names: the metrics of \
                 this one and of every new name from now on are labelled name=\"{METRIC_LABEL_OTHER}\". Task \
                 names label metrics, and each value is a time series your metrics backend \
                 keeps: name tasks after what they do (\"send-mail\"), never with ids or user \
                 input"
            );
        }
        SharedString::const_str(METRIC_LABEL_OTHER)
    }

    pub(crate) fn spawned(&self, name: Option<&Cow<'static, str>>) {
        metrics::counter!("background_tasks_spawned_total", "name" => self.label(name))
            .increment(1);
    }

    pub(crate) fn finished(
        &self,
        name: Option<&Cow<'static, str>>,
        outcome: Outcome,
        duration: Duration,
    ) {
        let label = self.label(name);
        metrics::counter!(
            "background_tasks_finished_total",
            "name" => label.clone(),
            "outcome" => outcome.as_str()
        )
        .increment(1);
        metrics::histogram!("background_tasks_duration_seconds", "name" => label)
            .record(duration.as_secs_f64());
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
