//! What a shutdown with durable workers reports.

use std::fmt;

use background_tasks::{ShutdownReport, TaskId, TaskRecord};

use crate::id::JobId;

/// A durable job that shutdown interrupted and that went back to the queue, without
/// consuming an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnedJob {
    pub(crate) queue: &'static str,
    pub(crate) id: JobId,
    /// The supervised task that ran it, as the core report names it.
    pub(crate) task: Option<TaskId>,
}

impl ReturnedJob {
    /// The job's queue: its [`Job::NAME`](crate::Job::NAME).
    #[must_use]
    pub fn queue(&self) -> &str {
        self.queue
    }

    /// The job's id.
    #[must_use]
    pub fn id(&self) -> &JobId {
        &self.id
    }
}

impl fmt::Display for ReturnedJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.queue, self.id)
    }
}

/// The supervisor's [`ShutdownReport`], with the durable jobs that went back to the queue;
/// from [`Workers::finish`](crate::Workers::finish).
///
/// The core report counts every task, durable jobs' included; [`lost`](Self::lost) tells the
/// aborted in-process tasks, whose work is gone, from the durable jobs, which another process
/// or a restart runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableShutdownReport {
    tasks: ShutdownReport,
    returned: Vec<ReturnedJob>,
    not_returned: usize,
}

impl DurableShutdownReport {
    pub(crate) fn new(
        tasks: ShutdownReport,
        returned: Vec<ReturnedJob>,
        not_returned: usize,
    ) -> Self {
        Self {
            tasks,
            returned,
            not_returned,
        }
    }

    /// The supervisor's report.
    #[must_use]
    pub fn tasks(&self) -> &ShutdownReport {
        &self.tasks
    }

    /// The durable jobs put back in the queue, without consuming an attempt: those the abort
    /// ended and those that stopped when cancelled.
    #[must_use]
    pub fn returned(&self) -> &[ReturnedJob] {
        &self.returned
    }

    /// How many aborted jobs could not be put back (the database was unavailable); they go
    /// back when other workers find this one silent.
    #[must_use]
    pub fn not_returned(&self) -> usize {
        self.not_returned
    }

    /// The aborted tasks that were not durable jobs: work that is lost.
    #[must_use]
    pub fn lost(&self) -> Vec<&TaskRecord> {
        let durable: std::collections::HashSet<TaskId> =
            self.returned.iter().filter_map(|job| job.task).collect();
        self.tasks
            .aborted_tasks()
            .iter()
            .filter(|task| !durable.contains(&task.id()))
            .collect()
    }

    /// The core report is clean and every aborted job went back to the queue.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.tasks.is_clean() && self.not_returned == 0
    }
}

const NAMED: usize = 10;

impl fmt::Display for DurableShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.tasks, f)?;
        let count = self.returned.len();
        write!(
            f,
            "; {count} durable job{} returned to the queue",
            if count == 1 { "" } else { "s" }
        )?;
        let named = if f.alternate() { usize::MAX } else { NAMED };
        for (index, job) in self.returned.iter().take(named).enumerate() {
            write!(f, "{}{job}", if index == 0 { ": " } else { ", " })?;
        }
        if count > named {
            write!(f, " and {} more", count - named)?;
        }
        if self.not_returned > 0 {
            write!(
                f,
                "; {} durable jobs not returned (database unavailable)",
                self.not_returned
            )?;
        }
        Ok(())
    }
}
