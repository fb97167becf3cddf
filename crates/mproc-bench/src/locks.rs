//! The lock beside the design it replaced: a robust, process-shared pthread mutex (glibc),
//! uncontended in one process and handed back and forth between two processes.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use mproc::prelude::*;

use crate::figures::{join, name, per, start};
use crate::stats::Stat;

/// Figures of this module.
#[derive(Debug, Default)]
pub struct Locks {
    /// `Lock` lock + unlock, contended by two processes, ns per acquisition.
    pub mproc_contended: Option<Stat>,
    /// The pthread mutex, uncontended, ns per lock + unlock.
    pub pthread: Option<Stat>,
    /// The pthread mutex, contended by two processes, ns per acquisition.
    pub pthread_contended: Option<Stat>,
}

/// A robust process-shared pthread mutex at the start of a segment's payload, followed by a
/// counter.
struct PthreadLock {
    seg: Segment,
}

impl PthreadLock {
    fn create(name: &str) -> PthreadLock {
        let seg = Segment::create(name, 128).expect("segment");
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is initialised before use and destroyed after; the mutex memory is
        // at the start of a 128-byte payload nobody else uses yet (aligned: payload offset 256
        // of a page-aligned mapping).
        unsafe {
            libc::pthread_mutexattr_init(attr.as_mut_ptr());
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
            libc::pthread_mutex_init(seg.as_ptr().cast(), attr.as_ptr());
            libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        }
        PthreadLock { seg }
    }

    fn open(name: &str) -> PthreadLock {
        PthreadLock {
            seg: Segment::open(name).expect("open"),
        }
    }

    fn counter(&self) -> &AtomicU64 {
        self.seg.view(64).expect("counter")
    }

    fn with<R>(&self, f: impl FnOnce() -> R) -> R {
        let m = self.seg.as_ptr().cast::<libc::pthread_mutex_t>();
        // SAFETY: the mutex was initialised by `create` before any process opened it; nobody
        // dies holding it in this benchmark.
        unsafe { libc::pthread_mutex_lock(m) };
        let r = f();
        // SAFETY: locked just above by this thread.
        unsafe { libc::pthread_mutex_unlock(m) };
        r
    }
}

fn pthread_cycle(n: u64) -> f64 {
    let l = PthreadLock::create(&name("pthread"));
    let t = Instant::now();
    for _ in 0..n {
        l.with(|| black_box(()));
    }
    per(t.elapsed(), n, 1.0)
}

/// Increments the counter under the lock `n` times (a non-atomic read-modify-write in
/// effect: load and store, made safe by the lock).
fn pthread_worker(args: (String, u64)) -> f64 {
    let l = PthreadLock::open(&args.0);
    let c = l.counter();
    meet(&args.0);
    let t = Instant::now();
    for _ in 0..args.1 {
        l.with(|| c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed));
    }
    per(t.elapsed(), args.1, 1.0)
}

/// Both processes start their loops together (a barrier named after the lock).
fn meet(lock_name: &str) {
    let b = Barrier::open(&format!("{lock_name}-go")).expect("open barrier");
    b.wait_timeout(std::time::Duration::from_secs(60))
        .expect("barrier");
}

fn pthread_contended(n: u64) -> f64 {
    let name = name("pthread-c");
    let l = PthreadLock::create(&name);
    let _go = Barrier::create(&format!("{name}-go"), 2).expect("barrier");
    let other = start(pthread_worker, (name.clone(), n));
    let here = pthread_worker((name, n));
    let there = join(other);
    assert_eq!(
        l.counter().load(Ordering::Relaxed),
        2 * n,
        "pthread lost updates"
    );
    // Two processes, 2n acquisitions in about the time each one took.
    // 2n acquisitions in the time the slower process took for its n.
    here.max(there) / 2.0
}

fn mproc_worker(args: (String, String, u64)) -> f64 {
    let lock = Lock::open(&args.0).expect("open lock");
    let seg = Segment::open(&args.1).expect("open counter");
    let c: &AtomicU64 = seg.view(0).expect("counter");
    meet(&args.0);
    let t = Instant::now();
    for _ in 0..args.2 {
        let _g = lock.lock().expect("lock");
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    per(t.elapsed(), args.2, 1.0)
}

fn mproc_contended(n: u64) -> f64 {
    let (ln, cn) = (name("lock-c"), name("lock-counter"));
    let _lock = Lock::create(&ln).expect("lock");
    let _go = Barrier::create(&format!("{ln}-go"), 2).expect("barrier");
    let counter = Segment::create(&cn, 64).expect("counter");
    let other = start(mproc_worker, (ln.clone(), cn.clone(), n));
    let here = mproc_worker((ln, cn, n));
    let there = join(other);
    let c: &AtomicU64 = counter.view(0).expect("counter");
    assert_eq!(c.load(Ordering::Relaxed), 2 * n, "Lock lost updates");
    here.max(there) / 2.0
}

/// Measures the lock figures.
pub fn measure(reps: usize, items: u64) -> Locks {
    eprintln!("  locks beside robust pthread mutexes");
    let contended = (items / 4).max(1000);
    Locks {
        mproc_contended: Stat::repeat(reps, || mproc_contended(contended)),
        pthread: Stat::repeat(reps, || pthread_cycle(items)),
        pthread_contended: Stat::repeat(reps, || pthread_contended(contended)),
    }
}
