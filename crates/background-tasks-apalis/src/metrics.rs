//! The `metrics` feature: durable jobs through the `metrics` facade, for any exporter
//! (Prometheus, OpenTelemetry, StatsD).
//!
//! As it happens: `background_jobs_enqueued_total{job}` per job stored,
//! `background_jobs_finished_total{job,outcome}` per attempt recorded, and
//! `background_jobs_duration_seconds{job}` per handler run. The two gauges,
//! `background_jobs_running{job}` and `background_jobs_pending{job}`, are set by
//! [`DurableJobs::record_metrics`], which an exporter's scrape handler calls: the queue's depth
//! is a query, which no job should pay for.
//!
//! Every label value is a [`Job::NAME`](crate::Job::NAME): a `&'static str` constant of a type
//! the program defines, so the set of series is fixed when the program is compiled.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::error::DurableJobError;
use crate::jobs::DurableJobs;

/// How an attempt ended, as the `outcome` label says it; the names are [`JobState`]'s where
/// they mean the same.
///
/// [`JobState`]: crate::JobState
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The handler returned `Ok`: the job is done.
    Done,
    /// The handler failed an attempt that was not its last: the job waits for its retry.
    Failed,
    /// The job will not run again: its last attempt failed, its payload no longer
    /// deserializes, or its worker was lost during its last attempt.
    Dead,
    /// Shutdown interrupted the job and put it back in the queue, without using an attempt.
    Returned,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Failed => "failed",
            Outcome::Dead => "dead",
            Outcome::Returned => "returned",
        }
    }
}

/// Counts a job stored by an enqueue.
pub(crate) fn enqueued(job: &'static str) {
    metrics::counter!("background_jobs_enqueued_total", "job" => job).increment(1);
}

/// Counts an attempt's end.
pub(crate) fn finished(job: &'static str, outcome: Outcome) {
    metrics::counter!(
        "background_jobs_finished_total",
        "job" => job,
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// The job types the workers of one [`DurableJobs`] run, each with how many of its handlers
/// run now: what `background_jobs_running` reads.
#[derive(Debug, Default)]
pub(crate) struct RunningJobs {
    /// A `BTreeMap`, so that the gauges are set in a stable order. Locked when a job type's
    /// workers start and when the gauges are set, never on a job's path.
    by_job: Mutex<BTreeMap<&'static str, Arc<AtomicUsize>>>,
}

impl RunningJobs {
    /// The count of `job`'s running handlers, shared by every worker of `job` started from
    /// the same [`DurableJobs`].
    pub(crate) fn register(&self, job: &'static str) -> Arc<AtomicUsize> {
        self.lock().entry(job).or_default().clone()
    }

    fn counts(&self) -> Vec<(&'static str, usize)> {
        self.lock()
            .iter()
            // Relaxed: a count for display, publishing nothing else.
            .map(|(job, running)| (*job, running.load(Ordering::Relaxed)))
            .collect()
    }

    /// Held for a map operation only; a panic while holding it cannot leave the map
    /// half-changed, so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Arc<AtomicUsize>>> {
        self.by_job.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One run of a job's handler: counted as running from its start, and timed, until it is
/// dropped, however the run ends (returned, panicked, or dropped by shutdown's abort).
#[derive(Debug)]
pub(crate) struct HandlerRun {
    job: &'static str,
    running: Arc<AtomicUsize>,
    started: Instant,
}

impl HandlerRun {
    pub(crate) fn start(job: &'static str, running: &Arc<AtomicUsize>) -> Self {
        // Relaxed: see `RunningJobs::counts`.
        running.fetch_add(1, Ordering::Relaxed);
        Self {
            job,
            running: running.clone(),
            started: Instant::now(),
        }
    }
}

impl Drop for HandlerRun {
    fn drop(&mut self) {
        // Relaxed: see `RunningJobs::counts`.
        self.running.fetch_sub(1, Ordering::Relaxed);
        metrics::histogram!("background_jobs_duration_seconds", "job" => self.job)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl DurableJobs {
    /// Sets the gauges of the `metrics` feature, for each job type that workers started from
    /// these jobs run: `background_jobs_running{job}`, its handlers running in this process
    /// now, and `background_jobs_pending{job}`, its jobs waiting in the database (new,
    /// delayed, back from an interrupted run, or failed and waiting for their retry). Call it
    /// where the metrics are read, such as a Prometheus scrape handler.
    ///
    /// The depth is one indexed count per job type, of the database every process shares: each
    /// process reports the same value (aggregate it with `max`, not `sum`). A process that
    /// runs no workers reports no gauges. The counters and the histogram are recorded as jobs
    /// are enqueued and run; see the crate docs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn scrape(jobs: background_tasks_apalis::DurableJobs) {
    /// // In the handler that renders the metrics, before rendering them:
    /// if let Err(error) = jobs.record_metrics().await {
    ///     tracing::warn!("cannot read the durable queues' depth: {error}");
    /// }
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`DurableJobError::Unavailable`] when the database does not answer; the running gauges
    /// are set all the same, and the pending ones keep their last values.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: it only reads; the gauges set before the cancellation keep
    /// their new values.
    pub async fn record_metrics(&self) -> Result<(), DurableJobError> {
        let counts = self.inner.running.counts();
        for (job, running) in &counts {
            metrics::gauge!("background_jobs_running", "job" => *job).set(*running as f64);
        }
        for (job, _) in &counts {
            let pending = self
                .inner
                .store
                .pending(job)
                .await
                .map_err(DurableJobError::Unavailable)?;
            metrics::gauge!("background_jobs_pending", "job" => *job).set(pending as f64);
        }
        Ok(())
    }
}
