//! The set of running tasks: what shutdown aborts, and what its report names.
//!
//! Entries live in a few mutex-guarded slabs, sharded by task id so that concurrent tasks
//! rarely meet on the same lock. An async task registers when it first suspends, from the
//! thread that polls it: a task that finishes in its first poll never touches the registry,
//! which keeps short tasks as cheap as a bare `TaskTracker` spawn. A blocking task registers
//! when it is spawned, since nothing else could name it if it outlives the budget. Entries are
//! removed when their task ends, so the registry only ever holds running tasks.

use std::borrow::Cow;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::handle::TaskId;

/// A running task.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Cow<'static, str>>,
    /// When the task first suspended (async tasks) or was spawned (blocking tasks).
    pub(crate) started: Instant,
    pub(crate) kind: Kind,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// An async task that has suspended: shutdown wakes it so that it sees the abort.
    Async(Waker),
    /// A blocking task, which only tokio's abort can keep from starting. The abort handle is
    /// set just after the spawn; until then, the `Aborted` stage alone keeps it from starting.
    Blocking {
        abort: Option<AbortHandle>,
        stage: Blocking,
    },
}

/// Where a blocking task is: a blocking closure cannot be stopped once it runs, so shutdown
/// aborts the queued ones and reports the running ones as abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocking {
    Queued,
    Running,
    /// Shutdown aborted it before it started: it must not start now.
    Aborted,
}

/// A slab that gives its memory back once it is empty, so that a burst of tasks leaves no
/// lasting footprint.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// The first vacant slot, or `slots.len()` when there is none.
    next_free: usize,
    len: usize,
}

#[derive(Debug)]
enum Slot<T> {
    Occupied(T),
    Vacant { next_free: usize },
}

/// Capacity above which an emptied slab frees its memory rather than keep it for reuse.
const KEEP_CAPACITY: usize = 64;

impl<T> Slab<T> {
    const fn new() -> Self {
        Self {
            slots: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> usize {
        let key = self.next_free;
        match self.slots.get_mut(key) {
            Some(slot) => {
                let Slot::Vacant { next_free } = *slot else {
                    unreachable!("the free list only links vacant slots")
                };
                self.next_free = next_free;
                *slot = Slot::Occupied(value);
            }
            None => {
                self.slots.push(Slot::Occupied(value));
                self.next_free = self.slots.len();
            }
        }
        self.len += 1;
        key
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.slots.get_mut(key) {
            Some(Slot::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let slot = self.slots.get_mut(key)?;
        if !matches!(slot, Slot::Occupied(_)) {
            return None;
        }
        let Slot::Occupied(value) = std::mem::replace(
            slot,
            Slot::Vacant {
                next_free: self.next_free,
            },
        ) else {
            unreachable!("checked to be occupied just above")
        };
        self.next_free = key;
        self.len -= 1;
        if self.len == 0 && self.slots.capacity() > KEEP_CAPACITY {
            *self = Self::new();
        }
        Some(value)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|slot| match slot {
            Slot::Occupied(value) => Some(value),
            Slot::Vacant { .. } => None,
        })
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.capacity()
    }
}

/// One lock's worth of entries, on its own cache lines so that shards do not slow each other.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Slab<Entry>>);

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[Shard]>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        // Four shards per core keep two spawners and the workers ending tasks apart; more only
        // cost memory and a longer walk at shutdown.
        let cores = std::thread::available_parallelism().map_or(4, usize::from);
        let shards = (cores * 4).next_power_of_two().clamp(4, 64);
        Self {
            shards: (0..shards)
                .map(|_| Shard(Mutex::new(Slab::new())))
                .collect(),
        }
    }

    /// The shard that holds the task `id`, locked.
    pub(crate) fn lock(&self, id: TaskId) -> MutexGuard<'_, Slab<Entry>> {
        // The modulo keeps consecutive ids, the common case for concurrent spawns, on
        // different shards.
        let shard = &self.shards[(id.as_u64() % self.shards.len() as u64) as usize];
        lock(&shard.0)
    }

    /// Every shard in turn, locked.
    pub(crate) fn lock_all(&self) -> impl Iterator<Item = MutexGuard<'_, Slab<Entry>>> {
        self.shards.iter().map(|shard| lock(&shard.0))
    }
}

/// Locks `mutex`, ignoring poison: no critical section in this crate leaves its data half
/// written, since none of them runs user code.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_reuses_freed_keys() {
        let mut slab = Slab::new();
        let a = slab.insert('a');
        let b = slab.insert('b');
        assert_eq!(b, 1);
        assert_eq!(slab.remove(a), Some('a'));
        assert_eq!(slab.remove(a), None, "a key is removed once");
        assert_eq!(slab.insert('c'), a);
        assert_eq!(slab.get_mut(b), Some(&mut 'b'));
        assert_eq!(slab.iter_mut().count(), 2);
    }

    #[test]
    fn slab_frees_its_memory_once_empty() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..10_000).map(|i| slab.insert(i)).collect();
        assert!(slab.capacity() >= 10_000);
        for key in keys {
            slab.remove(key);
        }
        assert_eq!(slab.capacity(), 0);
        assert_eq!(slab.insert(1), 0);
    }

    #[test]
    fn small_slabs_keep_their_memory() {
        let mut slab = Slab::new();
        let key = slab.insert(1);
        slab.remove(key);
        assert!(slab.capacity() > 0);
    }
}
