//! A task's name reaches its failure, whichever way the supervisor kept it: interned in the
//! task's own word (a `&'static str`, among the first names a supervisor sees), or in a box of
//! its own (an owned `String`, or a name past the interned ones).

mod support;

use std::borrow::Cow;
use std::collections::HashMap;

use background_tasks::{TaskFailure, TaskId, TaskSupervisor};

/// More names than a supervisor interns (255), so that the last ones are kept in a box.
const STATIC_NAMES: usize = 300;

/// Each kind of name: `STATIC_NAMES` distinct `&'static str`s, the first of them again at
/// another address, and owned `String`s.
fn names() -> Vec<Cow<'static, str>> {
    let mut names: Vec<Cow<'static, str>> = (0..STATIC_NAMES)
        .map(|n| Cow::Borrowed(&*format!("static-{n}").leak()))
        .collect();
    names.push(Cow::Borrowed(String::from("static-0").leak()));
    names.extend((0..3).map(|n| Cow::Owned(format!("owned-{n}"))));
    names
}

/// Spawns a task of each name with `spawn`, and returns the name each id was given.
fn spawn_each(
    supervisor: &TaskSupervisor,
    mut spawn: impl FnMut(&TaskSupervisor, Cow<'static, str>) -> TaskId,
) -> HashMap<TaskId, String> {
    names()
        .into_iter()
        .map(|name| (spawn(supervisor, name.clone()), name.into_owned()))
        .collect()
}

/// Checks that each task of `named` failed once, as `failed_so` says, under its name.
fn assert_each_failed_with_its_name(
    failures: &support::Failures,
    named: &HashMap<TaskId, String>,
    failed_so: fn(&TaskFailure) -> bool,
) {
    let failures = failures.lock().expect("the failures' lock");
    assert_eq!(failures.len(), named.len());
    for failure in failures.iter() {
        assert!(failed_so(failure), "{failure:?}");
        assert_eq!(
            failure.task_name(),
            Some(named[&failure.task_id()].as_str()),
            "{failure:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_that_panics_in_its_first_poll_is_reported_with_its_name_whatever_its_kind() {
    let (supervisor, failures) = support::recording(TaskSupervisor::builder());
    let mut handles = Vec::new();
    let named = spawn_each(&supervisor, |supervisor, name| {
        let handle = supervisor
            .task(name)
            .spawn(async { panic!("in the first poll") })
            .unwrap();
        let id = handle.id();
        handles.push(handle);
        id
    });
    for handle in handles {
        assert!(handle.await.unwrap_err().is_panic());
    }
    assert_each_failed_with_its_name(&failures, &named, TaskFailure::is_panic);
}

#[test]
fn a_task_never_polled_and_dropped_with_its_runtime_is_reported_with_its_name() {
    let (supervisor, failures) = support::recording(TaskSupervisor::builder());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let named = runtime.block_on(async {
        spawn_each(&supervisor, |supervisor, name| {
            supervisor.task(name).spawn(async {}).unwrap().id()
        })
    });
    drop(runtime);
    assert_each_failed_with_its_name(&failures, &named, TaskFailure::is_dropped);
}

#[tokio::test(start_paused = true)]
async fn a_suspended_task_is_listed_with_its_name_whatever_its_kind() {
    let supervisor = TaskSupervisor::new();
    let named = spawn_each(&supervisor, |supervisor, name| {
        supervisor
            .task(name)
            .spawn(std::future::pending::<()>())
            .unwrap()
            .id()
    });
    // Each task registers at its first poll, which a yield gives a few dozen tasks at a time.
    let mut snapshot = supervisor.snapshot();
    while snapshot.tasks.len() < named.len() {
        tokio::task::yield_now().await;
        snapshot = supervisor.snapshot();
    }
    let listed: HashMap<TaskId, String> = snapshot
        .tasks
        .into_iter()
        .map(|task| (task.id, task.name.unwrap_or_default().into_owned()))
        .collect();
    assert_eq!(listed, named);
}
