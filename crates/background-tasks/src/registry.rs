//! The set of running tasks: what shutdown aborts, and what its report names.
//!
//! Entries live in a few mutex-guarded slabs, sharded by the thread that registers them, so
//! that tasks registered at once on different threads rarely meet on a lock or a cache line.
//! An async task registers when it first suspends, from the thread that polls it: a task that
//! finishes in its first poll never touches the registry, which keeps short tasks as cheap as
//! a bare `TaskTracker` spawn. A blocking task registers
//! when it is spawned, since nothing else could name it if it outlives the budget. Entries are
//! removed when their task ends, so the registry only ever holds running tasks.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::PoisonError;
use std::task::Waker;

use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::handle::TaskId;
use crate::shutdown::ShardEnds;
use crate::sync::{Mutex, MutexGuard};

/// A running task.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) id: TaskId,
    pub(crate) name: Option<Cow<'static, str>>,
    /// When the task first suspended (async tasks) or was spawned (blocking tasks).
    pub(crate) started: Instant,
    /// Whether the task has a context, and so gets the grace: the cancel phase's walk stops
    /// the others.
    pub(crate) cooperative: bool,
    /// Whether the task waits for a place under its name's limit, not started: the cancel
    /// phase's walk stops it too, and the report names it as not started. `started` is when
    /// it began to wait, until it gets its place.
    pub(crate) waiting: bool,
    pub(crate) kind: Kind,
}

impl Entry {
    /// Whether a walk of the shutdown has stopped the task, and listed it as aborted.
    pub(crate) fn is_stopped(&self) -> bool {
        matches!(
            self.kind,
            Kind::Stopped
                | Kind::Blocking {
                    stage: Blocking::Aborted,
                    ..
                }
                | Kind::Tracked { listed: true }
        )
    }
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// An async task that has suspended: shutdown wakes it so that it sees the abort.
    Async(Waker),
    /// An async task that a walk of the shutdown has woken to stop, and listed as aborted.
    Stopped,
    /// A blocking task, which only tokio's abort can keep from starting. The abort handle is
    /// set just after the spawn; until then, the `Aborted` stage alone keeps it from starting.
    Blocking {
        abort: Option<AbortHandle>,
        stage: Blocking,
    },
    /// A future its owner polls ([`track_future`](crate::TaskSupervisor::track_future)):
    /// nothing but its owner can stop it, so the abort lists it as abandoned, once (`listed`).
    /// Registered when it is made, so that the abort can always name it.
    Tracked { listed: bool },
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

/// Slots per page of a [`Slab`], one bit each in [`Page::vacant`]. 64, so that the page table a
/// shard keeps for its last task after a burst of 200 000 is 25 KB: a thread's tasks all go to
/// its own shard (see [`Registry::lock`]).
const PAGE: usize = 64;

/// A slab that gives its memory back as it empties, so that a burst of tasks leaves no lasting
/// footprint, even while some long-lived tasks stay: entries live in pages of [`PAGE`] slots,
/// each page is freed once it holds no entry (all but one, kept to spare a shard that goes
/// from zero to one task and back an allocation each time), and new entries fill the
/// lowest-numbered page with room, so that the survivors of a burst gather in few pages.
#[derive(Debug)]
pub(crate) struct Slab<T> {
    pages: Vec<Option<Box<Page<T>>>>,
    /// The pages with a vacant slot. Ordered, so that inserts go to the lowest one.
    open: BTreeSet<usize>,
    /// The empty page kept for reuse, if any.
    spare: Option<Box<Page<T>>>,
    /// Every place of the page table below it holds a page: where the search for a free
    /// place starts, so that a shard filling pages one after the other finds its place at
    /// once rather than after a walk of the whole table, which made each page's opening cost
    /// a walk of every page before it (5 500 instructions, 86 a task, at 100 000 tasks).
    first_free: usize,
    len: usize,
}

#[derive(Debug)]
struct Page<T> {
    slots: [Option<T>; PAGE],
    /// One bit per slot, set when the slot is vacant.
    vacant: u64,
}

impl<T> Page<T> {
    fn new() -> Box<Self> {
        Box::new(Self {
            slots: [const { None }; PAGE],
            vacant: u64::MAX,
        })
    }
}

impl<T> Slab<T> {
    const fn new() -> Self {
        Self {
            pages: Vec::new(),
            open: BTreeSet::new(),
            spare: None,
            first_free: 0,
            len: 0,
        }
    }

    /// Inlined into a task's registration, as [`remove`](Self::remove) is into its end; what
    /// one insert in 64 does to the pages is out of line.
    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> usize {
        let index = match self.open.first() {
            Some(&index) => index,
            None => self.open_page(),
        };
        let Some(page) = self.pages[index].as_deref_mut() else {
            unreachable!("open pages exist")
        };
        let slot = page.vacant.trailing_zeros() as usize;
        page.vacant &= !(1 << slot);
        let vacant = &mut page.slots[slot];
        debug_assert!(vacant.is_none(), "a vacant slot holds no entry");
        // A vacant slot holds nothing to drop: what `replace` returns is forgotten, so that no
        // insert pays for the entry's drop glue.
        std::mem::forget(vacant.replace(value));
        if page.vacant == 0 {
            self.page_filled(index);
        }
        self.len += 1;
        index * PAGE + slot
    }

    /// Puts a page in the first free place of the page table, and returns that place.
    #[cold]
    fn open_page(&mut self) -> usize {
        let page = self.spare.take().unwrap_or_else(Page::new);
        let from = self.first_free.min(self.pages.len());
        let index = match self.pages[from..].iter().position(Option::is_none) {
            Some(offset) => from + offset,
            None => {
                self.pages.push(None);
                self.pages.len() - 1
            }
        };
        self.pages[index] = Some(page);
        self.first_free = index + 1;
        self.open.insert(index);
        index
    }

    /// Page `index` has no room left.
    #[cold]
    fn page_filled(&mut self, index: usize) {
        self.open.remove(&index);
    }

    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        let page = self.pages.get_mut(key / PAGE)?.as_deref_mut()?;
        page.slots[key % PAGE].as_mut()
    }

    /// Inlined into a task's end, its one caller on the hot path, so that the entry is not
    /// copied out through another frame; what one removal in 64 does to its page is out of
    /// line.
    #[inline]
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let (index, slot) = (key / PAGE, key % PAGE);
        let page = self.pages.get_mut(index)?.as_deref_mut()?;
        let value = page.slots[slot].take()?;
        let was_full = page.vacant == 0;
        page.vacant |= 1 << slot;
        self.len -= 1;
        if was_full || page.vacant == u64::MAX {
            self.page_opened_or_emptied(index, was_full);
        }
        Some(value)
    }

    /// After a removal from page `index`: a page that was full has room again, and a page
    /// that is empty now is freed.
    #[cold]
    fn page_opened_or_emptied(&mut self, index: usize, was_full: bool) {
        if was_full {
            self.open.insert(index);
        }
        let Some(page) = self.pages[index].as_deref() else {
            unreachable!("a removal's page exists")
        };
        if page.vacant == u64::MAX {
            self.open.remove(&index);
            let page = self.pages[index].take();
            self.first_free = self.first_free.min(index);
            if self.spare.is_none() {
                self.spare = page;
            }
            // Pages past the last one in use, and the spare room of the page table, go too.
            while self.pages.last().is_some_and(Option::is_none) {
                self.pages.pop();
            }
            if self.pages.capacity() > 2 * self.pages.len() + 4 {
                self.pages.shrink_to_fit();
            }
        }
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.pages
            .iter_mut()
            .flatten()
            .flat_map(|page| page.slots.iter_mut().flatten())
    }

    /// How many entries the slab could hold without allocating.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn capacity(&self) -> usize {
        (self.pages.iter().flatten().count() + usize::from(self.spare.is_some())) * PAGE
    }
}

/// One lock's worth of entries, on its own cache lines so that shards do not slow each other.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(Mutex<Part>);

/// What a shard's lock guards: its entries, and the ends of its tasks counted under that lock
/// during shutdown.
#[derive(Debug)]
pub(crate) struct Part {
    slab: Slab<Entry>,
    /// Plain counts, not atomics beside the log: the lock that guards them is the one each of
    /// these ends holds anyway, and its line is already in the ending core's cache, where
    /// shared atomics went back and forth between the two workers ending 100 000 tasks.
    pub(crate) ends: ShardEnds,
}

impl Part {
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Entry> {
        self.slab.iter_mut()
    }
}

/// Where an entry lives: its shard, and its slot there. Packed into [`Key::BITS`] bits, so that
/// a task's guard holds it in the word that held the task's id until it registered, and no
/// registered task needs a box for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key(u64);

impl Key {
    /// How many bits a key takes: the guard keeps its flags in the bits above.
    pub(crate) const BITS: u32 = 57;

    /// Bits for the shard's index: room for [`MAX_SHARDS`].
    const SHARD_BITS: u32 = MAX_SHARDS.trailing_zeros();

    fn new(shard: usize, slot: usize) -> Self {
        let key = ((slot as u64) << Self::SHARD_BITS) | shard as u64;
        // A slot past 2^51 would take 2^51 running tasks on one shard.
        debug_assert!(key >> Self::BITS == 0, "slot {slot} does not fit a key");
        Self(key)
    }

    /// The key a guard kept as `bits`.
    pub(crate) fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    pub(crate) fn bits(self) -> u64 {
        self.0
    }

    fn shard(self) -> usize {
        (self.0 & ((1 << Self::SHARD_BITS) - 1)) as usize
    }

    fn slot(self) -> usize {
        (self.0 >> Self::SHARD_BITS) as usize
    }
}

/// The most shards a registry has; a power of two, whose bits [`Key`] keeps.
const MAX_SHARDS: usize = 64;

/// One shard of the registry, locked.
pub(crate) struct Locked<'a> {
    index: usize,
    part: MutexGuard<'a, Part>,
}

impl Locked<'_> {
    #[inline]
    pub(crate) fn insert(&mut self, entry: Entry) -> Key {
        Key::new(self.index, self.part.slab.insert(entry))
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut Entry> {
        debug_assert_eq!(key.shard(), self.index, "a key of another shard");
        self.part.slab.get_mut(key.slot())
    }

    #[inline]
    pub(crate) fn remove(&mut self, key: Key) -> Option<Entry> {
        debug_assert_eq!(key.shard(), self.index, "a key of another shard");
        self.part.slab.remove(key.slot())
    }

    /// The ends counted under this shard's lock during shutdown.
    pub(crate) fn ends(&mut self) -> &mut ShardEnds {
        &mut self.part.ends
    }
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: Box<[Shard]>,
    /// `shards.len() - 1`: the count is a power of two, so a mask picks a task's shard, where
    /// a modulo would cost every registration a 64-bit division.
    mask: u64,
}

impl Registry {
    pub(crate) fn new() -> Self {
        // Four shards per core keep two spawners and the workers ending tasks apart; more only
        // cost memory and a longer walk at shutdown.
        // Under loom, two are enough for the models to see tasks on different shards: every
        // shard is a lock the walk takes, and each lock multiplies what loom must explore.
        let shards = if cfg!(all(loom, test)) {
            2
        } else {
            let cores = std::thread::available_parallelism().map_or(4, usize::from);
            (cores * 4).next_power_of_two().clamp(4, MAX_SHARDS)
        };
        debug_assert!(shards.is_power_of_two());
        Self {
            shards: (0..shards)
                .map(|_| {
                    Shard(Mutex::new(Part {
                        slab: Slab::new(),
                        ends: ShardEnds::default(),
                    }))
                })
                .collect(),
            mask: shards as u64 - 1,
        }
    }

    /// The shard that will hold the task `id`, locked: the calling thread's own (see
    /// [`home_shard`]), so that threads registering tasks at once meet on no lock and no
    /// cache line. Under loom, the shard of the id, so that the models see tasks on either
    /// shard whatever thread registers them.
    #[cfg_attr(not(all(loom, test)), expect(unused_variables))]
    pub(crate) fn lock(&self, id: TaskId) -> Locked<'_> {
        #[cfg(all(loom, test))]
        let index = id.as_u64() & self.mask;
        #[cfg(not(all(loom, test)))]
        let index = home_shard() & self.mask;
        // Truncation keeps the bits the mask kept.
        self.lock_shard(index as usize)
    }

    /// The shard of `key`, locked.
    pub(crate) fn lock_key(&self, key: Key) -> Locked<'_> {
        self.lock_shard(key.shard())
    }

    fn lock_shard(&self, index: usize) -> Locked<'_> {
        Locked {
            index,
            part: lock(&self.shards[index].0),
        }
    }

    /// Every shard in turn, locked.
    pub(crate) fn lock_all(&self) -> impl Iterator<Item = MutexGuard<'_, Part>> {
        self.shards.iter().map(|shard| lock(&shard.0))
    }

    /// Every shard, locked at once (in order, as nobody else holds two): what a phase change
    /// of the shutdown and its walk hold, so that the phase is stable under any shard's lock.
    pub(crate) fn lock_every(&self) -> Vec<MutexGuard<'_, Part>> {
        self.lock_all().collect()
    }
}

/// The shard index of the calling thread, before the mask: threads are dealt indexes in turn
/// the first time they register a task. Sharding by task id instead had both workers of a
/// two-core server take every shard's lock and write every shard's pages in turn, each
/// taking the cache lines from the other core, for every task that suspends.
#[cfg(not(all(loom, test)))]
fn home_shard() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The index the next thread gets.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static HOME: Cell<Option<u64>> = const { Cell::new(None) };
    }
    // A thread being torn down no longer has its locals: it takes the next index, once.
    HOME.try_with(|home| {
        home.get().unwrap_or_else(|| {
            // Relaxed: indexes only spread threads over shards; any order does.
            let index = NEXT.fetch_add(1, Ordering::Relaxed);
            home.set(Some(index));
            index
        })
    })
    .unwrap_or_else(|_| NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Locks `mutex`, ignoring poison: no critical section in this crate leaves its data half
/// written, since none of them runs user code.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(all(test, not(loom)))]
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
        assert_eq!(slab.capacity(), PAGE, "one spare page");
        assert_eq!(slab.pages.capacity(), 0);
        assert_eq!(slab.insert(1), 0);
    }

    #[test]
    fn long_lived_entries_keep_only_their_own_pages() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..10_000).map(|i| slab.insert(i)).collect();
        // One entry at the start, one in the middle and the last one outlive the burst.
        let survivors = [keys[0], keys[5_000], keys[9_999]];
        for &key in keys.iter().filter(|key| !survivors.contains(key)) {
            slab.remove(key);
        }
        assert_eq!(slab.capacity(), 4 * PAGE, "three pages and the spare");
        assert!(slab.pages.capacity() < 2 * 10_000 / PAGE);
        let mut left: Vec<_> = slab.iter_mut().map(|value| *value).collect();
        left.sort_unstable();
        assert_eq!(left, [0, 5_000, 9_999]);
        // New entries fill the lowest page with room first.
        assert_eq!(slab.insert(7), 1);
    }

    #[test]
    fn a_key_keeps_its_shard_and_slot_apart_from_the_guard_s_flags() {
        for (shard, slot) in [
            (0, 0),
            (MAX_SHARDS - 1, 0),
            (3, 1),
            (MAX_SHARDS - 1, (1 << 51) - 1),
        ] {
            let key = Key::new(shard, slot);
            assert_eq!((key.shard(), key.slot()), (shard, slot));
            assert_eq!(key.bits() >> Key::BITS, 0, "clear of the flag bits");
            assert_eq!(Key::from_bits(key.bits()), key);
        }
    }

    #[test]
    fn a_new_page_takes_the_lowest_free_place_of_the_page_table() {
        let mut slab = Slab::new();
        let keys: Vec<_> = (0..10 * PAGE).map(|i| slab.insert(i)).collect();
        // Pages 2 and 6 empty out: the first is kept as the spare, the second freed.
        for page in [6, 2] {
            for &key in &keys[page * PAGE..(page + 1) * PAGE] {
                slab.remove(key);
            }
        }
        assert!(slab.pages[2].is_none() && slab.pages[6].is_none());
        // The next pages go to the free places in order, lowest first, then past the end.
        let mut placed = Vec::new();
        for i in 0..3 * PAGE {
            let key = slab.insert(i);
            if key % PAGE == 0 {
                placed.push(key / PAGE);
            }
        }
        assert_eq!(placed, [2, 6, 10]);
        assert!(slab.pages.iter().all(Option::is_some));
    }

    #[test]
    fn a_slab_that_goes_from_one_entry_to_none_keeps_its_page() {
        let mut slab = Slab::new();
        let key = slab.insert(1);
        slab.remove(key);
        assert_eq!(slab.capacity(), PAGE);
        assert_eq!(slab.insert(2), 0);
    }
}
