//! Task names interned per supervisor, so that a named task that never suspends carries its
//! name as a small index in its guard's word (see `TaskGuard` in `spawn.rs`) rather than in a
//! box of its own: one allocation and one free fewer per task, the free often on another
//! thread than the allocation.

use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};

/// How many names a supervisor interns. A name past them (and an owned name: a `String`,
/// which may be a fresh one per task) lives in its task's box, as every name did before.
/// Tasks are named from a small fixed set in practice (`send-mail`, `resize-image`), as the
/// metrics' label cap also asks.
pub(crate) const CAPACITY: usize = 255;

/// The interned names of one supervisor: appended once each, never removed, so that an index
/// handed out stays valid for the supervisor's life.
#[derive(Debug)]
pub(crate) struct Names {
    /// The names, in the order they were first seen; index `i` is handed out as `i + 1`.
    slots: Box<[OnceLock<&'static str>]>,
    /// How many slots are set. Slots are set in order, and each before `len` counts it.
    len: AtomicUsize,
    /// Serialises additions, so that a name gets one index however many threads see it first.
    adding: Mutex<()>,
}

impl Default for Names {
    fn default() -> Self {
        Self {
            slots: (0..CAPACITY).map(|_| OnceLock::new()).collect(),
            len: AtomicUsize::new(0),
            adding: Mutex::new(()),
        }
    }
}

impl Names {
    /// The index of `name`, from 1 to [`CAPACITY`], interning it if it is new; `None` once
    /// every slot holds another name.
    #[inline]
    pub(crate) fn index(&self, name: &'static str) -> Option<u8> {
        // Acquire: pairs with the Release store in `add`, so every slot below `len` is set and
        // visible. The common case: the same `&'static str` as the spawn that interned it.
        let len = self.len.load(Ordering::Acquire);
        let set = self.slots[..len].iter().filter_map(OnceLock::get);
        for (index, slot) in set.enumerate() {
            if ptr::eq(*slot, name) {
                return to_index(index);
            }
        }
        self.add(name, len)
    }

    /// Interns `name`, unless a slot holds the same text already (a literal of another crate
    /// or codegen unit may live at another address); `seen` slots were searched by address.
    #[cold]
    fn add(&self, name: &'static str, seen: usize) -> Option<u8> {
        // Without the lock first: a name interned under another address is looked up on every
        // spawn that uses that address, and must not take a lock each time.
        if let Some(index) = self.find(name, seen) {
            return to_index(index);
        }
        // The lock only orders additions; a panic cannot happen under it, and a poisoned one
        // guards nothing that could be half-written (each slot is set once, atomically).
        let _adding = self.adding.lock().unwrap_or_else(PoisonError::into_inner);
        // Relaxed: additions happen under the lock, whose acquisition orders this read after
        // every earlier addition's store.
        let len = self.len.load(Ordering::Relaxed);
        if let Some(index) = self.find(name, len) {
            return to_index(index);
        }
        let slot = self.slots.get(len)?;
        // The lock makes this the only writer of the slot, which no reader looks at before
        // `len` counts it.
        let _ = slot.set(name);
        // Release: a reader that sees the new `len` sees the slot set.
        self.len.store(len + 1, Ordering::Release);
        to_index(len)
    }

    /// The slot below `len`, a count of slots known to be set, whose name reads `name`.
    fn find(&self, name: &str, len: usize) -> Option<usize> {
        self.slots[..len]
            .iter()
            .position(|slot| slot.get().is_some_and(|slot| *slot == name))
    }

    /// The name interned as `index`.
    #[inline]
    pub(crate) fn get(&self, index: u8) -> Option<&'static str> {
        let slot = self.slots.get(usize::from(index).checked_sub(1)?)?;
        slot.get().copied()
    }
}

/// The index handed out for the slot `slot`: one more, so that 0 can mean "no name".
#[inline]
fn to_index(slot: usize) -> Option<u8> {
    u8::try_from(slot + 1).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_gets_one_index_by_address_or_by_text() {
        let names = Names::default();
        let job = names.index("job");
        assert_eq!(job, Some(1));
        assert_eq!(names.index("mail"), Some(2));
        assert_eq!(names.index("job"), job);
        // The same text at another address (leaked, as a `&'static str` made at run time).
        let elsewhere: &'static str = String::from("job").leak();
        assert_eq!(names.index(elsewhere), job);
        assert_eq!(names.get(1), Some("job"));
        assert_eq!(names.get(2), Some("mail"));
        assert_eq!(names.get(0), None);
        assert_eq!(names.get(3), None);
    }

    #[test]
    fn names_past_the_capacity_are_not_interned_and_earlier_ones_still_are() {
        let names = Names::default();
        for n in 0..CAPACITY {
            let name: &'static str = format!("name-{n}").leak();
            assert_eq!(names.index(name), u8::try_from(n + 1).ok());
        }
        assert_eq!(names.index("one too many"), None);
        assert_eq!(names.get(u8::MAX), Some("name-254"));
        assert_eq!(names.index("name-0"), Some(1));
    }

    #[test]
    fn threads_interning_the_same_names_at_once_agree_on_their_indexes() {
        let names = Names::default();
        let seen: Vec<Vec<Option<u8>>> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        ["a", "b", "c", "d", "e"]
                            .iter()
                            .map(|name| names.index(name))
                            .collect()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("no thread panics"))
                .collect()
        });
        for indexes in &seen {
            assert_eq!(indexes, &seen[0]);
        }
        let mut distinct = seen[0].clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 5, "each name its own index: {seen:?}");
    }
}
