//! The supervisor's lifecycle phase and running-task counts, packed in one atomic word.
//!
//! The word holds the phase (2 bits), the number of running tasks (31 bits) and, among them,
//! the number of cooperative ones: tasks with a [`TaskContext`](crate::TaskContext), which can
//! see the cancellation signal and so get the `cancel_grace` (31 bits). Two billion running
//! tasks are out of reach (each takes a 128-byte tokio cell at least), so neither count
//! overflows into the next. Keeping both in one word costs a spawn nothing: its admission adds
//! 1, or 1 plus the cooperative unit, in the same single read-modify-write.
//!
//! Admission, task ends and phase changes are all read-modify-write operations on this one word,
//! so each of them sees exactly which phase it happened in: a spawn can never slip in after
//! admission closed, and every task that ends is counted in exactly one phase. That is what makes
//! the [`ShutdownReport`](crate::ShutdownReport) counts exact, and the `max_tasks` limit race-free.

use std::sync::atomic::Ordering;

use crate::sync::{AtomicU8, AtomicU64};

const PHASE_SHIFT: u32 = 62;
const COOPERATIVE_SHIFT: u32 = 31;
const COUNT_MASK: u64 = (1 << COOPERATIVE_SHIFT) - 1;

/// What a task adds to the word while it runs: one running task, and one cooperative task if
/// it is one.
const fn unit(cooperative: bool) -> u64 {
    1 + ((cooperative as u64) << COOPERATIVE_SHIFT)
}

fn all(word: u64) -> usize {
    (word & COUNT_MASK) as usize
}

fn cooperative(word: u64) -> usize {
    ((word >> COOPERATIVE_SHIFT) & COUNT_MASK) as usize
}

/// The tasks left after an end: all of them, and the cooperative ones among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    pub(crate) all: usize,
    pub(crate) cooperative: usize,
}

impl Left {
    /// What the shutdown's wait in `phase` waits for: every task, except in the cancel phase,
    /// where the tasks without a context are being aborted and only the cooperative ones get
    /// the grace.
    pub(crate) fn waited_for(self, phase: Phase) -> usize {
        if phase == Phase::Cancelling {
            self.cooperative
        } else {
            self.all
        }
    }

    fn of(word: u64) -> Self {
        Self {
            all: all(word),
            cooperative: cooperative(word),
        }
    }
}

/// Where the supervisor is in its life. Phases only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Accepting tasks from anyone.
    Running = 0,
    /// Shutdown began: waiting for tasks to end; only running tasks may spawn follow-ups.
    Draining = 1,
    /// The cancellation signal fired: waiting `cancel_grace` for the cooperative tasks, the
    /// others being aborted; nobody may spawn.
    Cancelling = 2,
    /// The report is written; tasks still ending are already counted as aborted or abandoned.
    Done = 3,
}

impl Phase {
    fn of(word: u64) -> Self {
        match word >> PHASE_SHIFT {
            0 => Phase::Running,
            1 => Phase::Draining,
            2 => Phase::Cancelling,
            _ => Phase::Done,
        }
    }
}

/// Who asks to spawn: outside callers are refused from the moment shutdown begins, running
/// tasks only once the cancel phase begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Outside,
    Task,
}

/// Why admission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    ShuttingDown,
    /// Shut down, and the count was raised after the abort walk's snapshot: the place must be
    /// given back, and is no part of what the walk counted.
    Undo,
    AtCapacity,
}

/// What shutdown stops at the next poll, in two steps, each set once: the tasks that cannot see
/// the cancellation signal when the cancel phase begins, then every task when the grace runs
/// out. Read by every poll of every task, so it sits on cache lines of its own, away from the
/// busy [`State`] word.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct AbortFlag(AtomicU8);

/// The steps of the [`AbortFlag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Abort {
    /// Tasks without a context: the cancel phase began.
    Plain = 1,
    /// Every task: the grace ran out.
    All = 2,
}

impl AbortFlag {
    pub(crate) fn new() -> Self {
        Self(AtomicU8::new(0))
    }

    /// Whether a task, cooperative or not, must stop.
    #[inline]
    pub(crate) fn stops(&self, cooperative: bool) -> bool {
        // Acquire pairs with the release in `set`: a task that sees the flag also sees the
        // phase it was set in. One load and a compare, as the boolean it replaces: a plain task
        // stops from step 1 on, a cooperative one from step 2.
        self.0.load(Ordering::Acquire) > u8::from(cooperative)
    }

    pub(crate) fn set(&self, step: Abort) {
        // Release: as above. Steps only move forward, under the shutdown lock.
        self.0.store(step as u8, Ordering::Release);
    }
}

#[derive(Debug)]
pub(crate) struct State {
    word: AtomicU64,
    /// How many admissions raced the start of the shutdown or of its cancel phase and were
    /// admitted after all: what the loom models' oracle adds to the count at the close.
    #[cfg(all(loom, test))]
    pub(crate) admitted_racing: AtomicU64,
}

impl State {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
            #[cfg(all(loom, test))]
            admitted_racing: AtomicU64::new(0),
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        // Acquire pairs with the release in `advance`, so whoever sees a phase also sees the
        // cancellation tokens that were fired before it.
        Phase::of(self.word.load(Ordering::Acquire))
    }

    pub(crate) fn running(&self) -> usize {
        // Acquire pairs with the release decrement in `end_*`: a caller that sees zero also sees
        // everything the ended tasks wrote.
        all(self.word.load(Ordering::Acquire))
    }

    /// How many of the running tasks are cooperative.
    pub(crate) fn cooperative(&self) -> usize {
        // Acquire: as in `running`.
        cooperative(self.word.load(Ordering::Acquire))
    }

    /// How many of the running tasks have no context, from one reading of the word (two
    /// readings could pair a count with a newer cooperative count).
    pub(crate) fn without_context(&self) -> usize {
        // Acquire: as in `running`.
        let word = self.word.load(Ordering::Acquire);
        all(word) - cooperative(word)
    }

    /// Counts one more running task, unless the phase or the limit forbids it.
    ///
    /// Without a limit, while running, the count is raised first and the phase checked after:
    /// one atomic read-modify-write instead of a compare-exchange loop, which matters on the
    /// hot path of every spawn. Once shutdown has begun (or under a limit), the phase is
    /// checked before the count moves, so that a refusal takes no place. The one place given
    /// back is [`Refused::Undo`]'s: a fetch-add that raced the abort walk itself.
    pub(crate) fn admit(
        &self,
        origin: Origin,
        cooperative: bool,
        limit: Option<usize>,
    ) -> Result<(), Refused> {
        let unit = unit(cooperative);
        let admits = |word: u64| {
            matches!(
                (Phase::of(word), origin),
                (Phase::Running, _) | (Phase::Draining, Origin::Task)
            )
        };
        // Relaxed: a first read, which the read-modify-write below validates.
        let mut word = self.word.load(Ordering::Relaxed);
        if limit.is_none() && Phase::of(word) == Phase::Running {
            // AcqRel: the admission is ordered with the phase change it raced with.
            let word = self.word.fetch_add(unit, Ordering::AcqRel);
            // A phase change since the read above means this spawn overlapped the start of
            // the shutdown (or of its cancel phase): it is ordered before it, and admitted.
            // Its place is in the count the drain waits for and the walk's snapshot, as a
            // task's must be: refused, its give-back could come after the report was written,
            // which would then count a task that never was. Only the walk closes admission
            // for good; a place taken after it is in no snapshot, and is given back.
            return match Phase::of(word) {
                Phase::Running => Ok(()),
                Phase::Done => Err(Refused::Undo),
                Phase::Draining | Phase::Cancelling => {
                    #[cfg(all(loom, test))]
                    self.admitted_racing.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            };
        }
        // Once shutdown has begun (or under a limit), the phase is checked before the count
        // moves: a refusal then takes no place, which the report would have to wait for.
        let limit = limit.unwrap_or(usize::MAX);
        loop {
            if !admits(word) {
                return Err(Refused::ShuttingDown);
            }
            if all(word) >= limit {
                return Err(Refused::AtCapacity);
            }
            // AcqRel: as above.
            match self.word.compare_exchange_weak(
                word,
                word + unit,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts one task fewer if the supervisor is still `Running`; returns the number of tasks
    /// left, or `None` (and changes nothing) when shutdown has begun and the end must be
    /// recorded under the shutdown lock with [`State::end_in_shutdown`].
    #[inline]
    pub(crate) fn end_if_running(&self, cooperative: bool) -> Option<usize> {
        let unit = unit(cooperative);
        let mut word = self.word.load(Ordering::Relaxed);
        loop {
            if Phase::of(word) != Phase::Running {
                return None;
            }
            // Release: publishes the task's writes to whoever sees the count drop.
            match self.word.compare_exchange_weak(
                word,
                word - unit,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(all(word - unit)),
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts one task fewer whatever the phase; returns the phase it ended in and the number
    /// of tasks left. Callers hold the shutdown lock, so the phase cannot change meanwhile.
    pub(crate) fn end_in_shutdown(&self, cooperative: bool) -> (Phase, Left) {
        let unit = unit(cooperative);
        // Release: as in `end_if_running`.
        let word = self.word.fetch_sub(unit, Ordering::Release) - unit;
        (Phase::of(word), Left::of(word))
    }

    /// Moves to `to` if that is forward; returns the phase it was in and the count at the
    /// instant of the move, which no admission or end can fall between. Callers hold the
    /// shutdown lock, so phases never race with each other.
    pub(crate) fn advance(&self, to: Phase) -> (Phase, usize) {
        // Relaxed: under the shutdown lock the phase cannot change, so this read is exact; the
        // count it reads is not used.
        let from = Phase::of(self.word.load(Ordering::Relaxed));
        if to <= from {
            return (from, self.running());
        }
        // Phases only grow, so adding the difference of the phase bits moves the phase without
        // touching the count, atomically with concurrent admissions and ends: the word it
        // returns holds the count at that instant. AcqRel pairs with the acquire in `phase` and
        // the read-modify-writes of `admit`.
        let word = self.word.fetch_add(
            ((to as u64) - (from as u64)) << PHASE_SHIFT,
            Ordering::AcqRel,
        );
        (from, all(word))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn left(all: usize, cooperative: usize) -> Left {
        Left { all, cooperative }
    }

    #[test]
    fn admission_follows_phase_and_origin() {
        let state = State::new();
        assert_eq!(state.admit(Origin::Outside, false, None), Ok(()));
        assert_eq!(state.advance(Phase::Draining), (Phase::Running, 1));
        // Once shutdown has begun, a refusal takes no place, with a limit or without (only a
        // fetch-add racing the walk does, and gives it back through `Undo`).
        for limit in [None, Some(9)] {
            assert_eq!(
                state.admit(Origin::Outside, false, limit),
                Err(Refused::ShuttingDown)
            );
        }
        assert_eq!(state.running(), 1);
        assert_eq!(state.admit(Origin::Task, false, None), Ok(()));
        state.advance(Phase::Cancelling);
        for limit in [None, Some(9)] {
            assert_eq!(
                state.admit(Origin::Task, false, limit),
                Err(Refused::ShuttingDown)
            );
        }
        assert_eq!(state.running(), 2);
    }

    #[test]
    fn limit_counts_running_tasks() {
        let state = State::new();
        assert_eq!(state.admit(Origin::Outside, false, Some(1)), Ok(()));
        assert_eq!(
            state.admit(Origin::Outside, false, Some(1)),
            Err(Refused::AtCapacity)
        );
        assert_eq!(state.end_if_running(false), Some(0));
        assert_eq!(state.admit(Origin::Outside, false, Some(1)), Ok(()));
    }

    #[test]
    fn ends_after_shutdown_began_are_left_to_the_shutdown_lock() {
        let state = State::new();
        state.admit(Origin::Outside, false, None).unwrap();
        state.admit(Origin::Outside, false, None).unwrap();
        state.advance(Phase::Draining);
        assert_eq!(state.end_if_running(false), None);
        assert_eq!(state.running(), 2);
        assert_eq!(state.end_in_shutdown(false), (Phase::Draining, left(1, 0)));
        assert_eq!(state.advance(Phase::Done), (Phase::Draining, 1));
        assert_eq!(
            state.advance(Phase::Cancelling),
            (Phase::Done, 1),
            "phases never go back"
        );
        assert_eq!(state.end_in_shutdown(false), (Phase::Done, left(0, 0)));
    }

    #[test]
    fn cooperative_tasks_are_counted_apart_in_the_same_word() {
        let state = State::new();
        state.admit(Origin::Outside, true, None).unwrap();
        state.admit(Origin::Outside, false, Some(3)).unwrap();
        state.admit(Origin::Outside, true, Some(3)).unwrap();
        assert_eq!(
            state.admit(Origin::Outside, true, Some(3)),
            Err(Refused::AtCapacity),
            "the limit counts every task"
        );
        assert_eq!((state.running(), state.cooperative()), (3, 2));
        assert_eq!(state.end_if_running(true), Some(2));
        assert_eq!(state.advance(Phase::Cancelling), (Phase::Running, 2));
        assert_eq!(state.phase(), Phase::Cancelling);
        assert_eq!(state.end_in_shutdown(true), (Phase::Cancelling, left(1, 0)));
        assert_eq!(
            state.end_in_shutdown(false),
            (Phase::Cancelling, left(0, 0))
        );
        assert_eq!(state.advance(Phase::Done), (Phase::Cancelling, 0));
        assert_eq!(state.phase(), Phase::Done);
    }
}
