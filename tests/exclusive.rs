//! `create_exclusive` across real processes: a named object whose creator exited without
//! unlinking it is refused (`AlreadyExists`, its contents kept) by `create_exclusive`, and
//! reclaimed by `create`. For every named type besides `Queue` (whose opt-out is
//! `QueueOptions::fail_if_exists`, tested with the queue).

use mproc::prelude::*;
use mproc_testkit::{fork_child, unique_name};

/// Runs `make(name)` in a child that leaves the object behind (`forget`), then checks that
/// `exclusive(name)` is refused, that `check(name)` still finds what the child left, and that
/// `plain(name)` reclaims the name.
fn left_behind<T>(
    tag: &str,
    make: fn(&str) -> Result<T, SegmentError>,
    exclusive: fn(&str) -> Result<T, SegmentError>,
    check: fn(&str) -> bool,
) {
    let name = unique_name(tag);
    let n = name.clone();
    fork_child(move || match make(&n) {
        Ok(obj) => {
            std::mem::forget(obj); // the name outlives its creator
            0
        }
        Err(_) => 1,
    })
    .assert_success();
    assert!(
        matches!(exclusive(&name), Err(SegmentError::AlreadyExists { .. })),
        "{tag}: create_exclusive took a stale name"
    );
    assert!(check(&name), "{tag}: the stale object's contents are gone");
    let fresh = make(&name).expect("create reclaims the stale name");
    drop(fresh);
    assert!(
        mproc_testkit::shm_entries(&name).is_empty(),
        "{tag}: left in /dev/shm"
    );
}

#[test]
fn create_exclusive_refuses_a_stale_name_that_create_reclaims() {
    left_behind(
        "excl-array",
        |n| Array::<u32>::create_from(n, &[1, 2, 3]),
        |n| Array::<u32>::create_exclusive(n, 3),
        |n| Array::<u32>::open(n).is_ok_and(|a| a.lock().is_ok_and(|g| g[2] == 3)),
    );
    left_behind(
        "excl-value",
        |n| Value::<u64>::create(n, 42),
        |n| Value::<u64>::create_exclusive(n, 0),
        |n| Value::<u64>::open(n).is_ok_and(|v| v.get().is_ok_and(|x| x == 42)),
    );
    left_behind(
        "excl-atomic",
        |n| AtomicValue::<u64>::create(n, 7),
        |n| AtomicValue::<u64>::create_exclusive(n, 0),
        |n| AtomicValue::<u64>::open(n).is_ok_and(|v| v.load() == 7),
    );
    left_behind("excl-lock", Lock::create, Lock::create_exclusive, |n| {
        Lock::open(n).is_ok()
    });
    left_behind("excl-rlock", RLock::create, RLock::create_exclusive, |n| {
        RLock::open(n).is_ok()
    });
    left_behind("excl-event", Event::create, Event::create_exclusive, |n| {
        Event::open(n).is_ok()
    });
    left_behind(
        "excl-condition",
        Condition::create,
        Condition::create_exclusive,
        |n| Condition::open(n).is_ok(),
    );
    left_behind(
        "excl-semaphore",
        |n| Semaphore::create(n, 3),
        |n| Semaphore::create_exclusive(n, 1),
        |n| Semaphore::open(n).is_ok_and(|s| s.value() == 3),
    );
    left_behind(
        "excl-bounded",
        |n| BoundedSemaphore::create(n, 2),
        |n| BoundedSemaphore::create_exclusive(n, 1),
        |n| BoundedSemaphore::open(n).is_ok(),
    );
    left_behind(
        "excl-barrier",
        |n| Barrier::create(n, 4),
        |n| Barrier::create_exclusive(n, 1),
        |n| Barrier::open(n).is_ok_and(|b| b.parties() == 4),
    );
}
