//! The atomics of the connection stage watch, in one place, so that a model checker can swap
//! them (the crate cannot build under `--cfg loom` yet: tokio leaves out `net` there).

pub(crate) use std::sync::atomic::AtomicU8;
