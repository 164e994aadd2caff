//! What the core's benchmarks share: the runtime they measure on and how they read their
//! arguments. A folder, not a file of `benches/`, so that cargo does not take it for a bench.

// Each bench uses some of these, and each bench is its own crate.
#![allow(dead_code)]

use tokio::runtime::Runtime;

/// The runtime every bench measures on: two workers, as the machine has two cores.
pub(crate) fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a 2-worker runtime builds")
}

/// `full` outside of test mode, a thousandth of it when divan only checks that benchmarks run
/// (`cargo test --benches`, `-- --test`): divan's own rule for test mode.
pub(crate) fn scaled(full: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    let test = args.iter().any(|arg| arg == "--test") || !args.iter().any(|arg| arg == "--bench");
    if test { (full / 1_000).max(1) } else { full }
}

/// The arguments of a bench with a `main` of its own, without the flags cargo adds
/// (`--bench`): empty when `cargo test --benches` runs it.
pub(crate) fn words() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect()
}
