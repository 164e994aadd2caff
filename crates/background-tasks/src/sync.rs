//! The atomics and locks of the accounting protocol, from `std`, or from `loom` when the
//! crate's tests are built with `--cfg loom` (as tokio does), so that the loom models check the
//! code that runs, not a copy of it.

#[cfg(all(loom, test))]
pub(crate) use loom::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, fence};
#[cfg(all(loom, test))]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, fence};
#[cfg(not(all(loom, test)))]
pub(crate) use std::sync::{Mutex, MutexGuard};
