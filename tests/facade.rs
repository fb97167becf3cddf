//! The facade as a user sees it: one dependency, `mproc::prelude`, and the layers working
//! together across real processes — a named queue of jobs, a robust lock around shared
//! results, an event to start everyone at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mproc::prelude::*;
use mproc_testkit::{fork_child, unique_name};

#[test]
fn workers_take_jobs_from_a_named_queue_and_sum_under_a_lock() {
    let jobs_name = unique_name("facade-jobs");
    let jobs: Queue<u64> = Queue::create(&jobs_name, 64).unwrap();
    let lock = Lock::new().unwrap();
    let start = Event::new().unwrap();
    let results = Segment::anonymous(64).unwrap();
    let sum: &AtomicU64 = results.view(0).unwrap();

    let workers: Vec<_> = (0..3)
        .map(|_| {
            fork_child(|| {
                let jobs: Queue<u64> = match Queue::open(&jobs_name) {
                    Ok(q) => q,
                    Err(_) => return 1,
                };
                if !start.wait_timeout(Duration::from_secs(60)) {
                    return 2;
                }
                loop {
                    match jobs.get_timeout(Duration::from_secs(60)) {
                        Ok(n) => {
                            let _g = lock.lock().unwrap();
                            // Non-atomic on purpose: the lock keeps it exact.
                            let v = sum.load(Ordering::Relaxed);
                            sum.store(v + n * n, Ordering::Relaxed);
                        }
                        Err(GetError::Closed) => return 0,
                        Err(_) => return 3,
                    }
                }
            })
        })
        .collect();
    start.set();
    for n in 1..=1000u64 {
        jobs.put(n).unwrap();
    }
    jobs.close();
    for w in workers {
        w.assert_success();
    }
    let expected: u64 = (1..=1000u64).map(|n| n * n).sum();
    assert_eq!(sum.load(Ordering::Relaxed), expected);
}

/// The README's quick start, verbatim in substance.
#[test]
fn readme_quick_start_runs() {
    use mproc::prelude::*;

    fn score(word: String) -> usize {
        word.chars().filter(|c| "aeiou".contains(*c)).count()
    }

    mproc::init();
    let pool = Pool::new(4).unwrap();
    let words = ["shared", "memory", "process", "pool"].map(String::from);
    assert_eq!(pool.map(score, words).unwrap(), [2, 2, 2, 2]);

    let mut p = Process::spawn(|n: u64| (1..=n).sum::<u64>(), 100).unwrap();
    assert_eq!(p.join().unwrap(), 5050);
}

/// Every public error type converts into `Box<dyn Error + Send + Sync>` (and so into
/// `anyhow::Error`): `?` works from any mproc call in a function that returns one. Checked at
/// compile time; the run shows one conversion of each kind keeps its message.
#[test]
fn every_error_type_is_a_send_sync_static_error() {
    fn boxed<E: std::error::Error + Send + Sync + 'static>(
        e: E,
    ) -> Box<dyn std::error::Error + Send + Sync> {
        Box::new(e)
    }
    use mproc::pool::{JoinError, OsError, StartError};
    use mproc::queue::TaskDoneError;
    use mproc::segment::PeekError;
    use mproc::sync::{BarrierError, SemaphoreError};
    let errors = [
        boxed(SegmentError::InvalidArgument { reason: "r" }),
        boxed(PeekError::NotRegular),
        boxed(LockError::<()>::Timeout),
        boxed(SemaphoreError::OverRelease { bound: 1 }),
        boxed(BarrierError::Timeout),
        boxed(PutError::Full(5u64)),
        boxed(GetError::Closed),
        boxed(TaskDoneError::TooManyCalls),
        boxed(ArrayError::Segment(SegmentError::NotReady {
            creator_dead: false,
        })),
        boxed(TaskError::Cancelled),
        boxed(StartError::ThreadedFork { threads: 2 }),
        boxed(JoinError::Timeout),
        boxed(OsError {
            call: "kill",
            errno: mproc::Errno::SRCH,
        }),
        boxed(ProcessError::from(JoinError::AlreadyJoined)),
    ];
    for e in &errors {
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        errors.last().map(|e| e.to_string()).as_deref(),
        Some("the process was already joined")
    );
}
