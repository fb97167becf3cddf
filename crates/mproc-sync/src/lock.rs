//! `Lock` and `RLock`: robust, process-shared mutexes.
//!
//! Both are glibc `pthread_mutex_t`s initialised `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST` (`RLock` also `PTHREAD_MUTEX_RECURSIVE`). The kernel keeps a list of
//! the robust mutexes each thread holds; when the thread dies — SIGKILL, `_exit`, a crash — it
//! marks each one "owner died" and wakes a waiter. The next locker gets `EOWNERDEAD`: it owns
//! the mutex, we immediately make the *pthread* mutex consistent (so it stays usable even if
//! this process dies next) and raise our own `inconsistent` flag in shared memory. Every
//! acquisition then reports [`LockError::OwnerDied`] (carrying the guard) until someone calls
//! `make_consistent()` on a guard: the lock never deadlocks and never silently hides a death.
//!
//! The uncontended path is one `pthread_mutex_lock` (a compare-and-swap plus robust-list
//! bookkeeping, no system call) and one load of the flag.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::time::{Duration, Instant, SystemTime};

/// The longest a blocked `lock` sleeps before trying again (see `RawLock::lock_until`).
const LOCK_NAP: Duration = Duration::from_millis(100);

use mproc_segment::{Kind, Segment, SegmentError, ShmSafe};
use nix::errno::Errno;

use crate::LockError;
use crate::atomic::{AtomicU32, Ordering};
use crate::placed::{Placed, Primitive};

/// The in-memory form of a lock, `#[repr(C)]`, 48 bytes, 8-aligned: place it inside any
/// segment (at an 8-aligned offset) and call [`RawLock::init`] before the segment is published.
///
/// Fields: the pthread mutex (touched only by pthread calls); `inconsistent` (1 while an owner
/// death is unresolved; written by lock holders, read by lockers); `kind` (0 uninitialised, 1
/// plain, 2 recursive; written once by `init`).
#[repr(C, align(8))]
pub struct RawLock {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    inconsistent: AtomicU32,
    kind: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RawLock>() == 48);
const _: () = assert!(std::mem::align_of::<RawLock>() == 8);

const KIND_PLAIN: u32 = 1;
const KIND_RECURSIVE: u32 = 2;

// SAFETY: a pthread_mutex_t is plain integers in Rust's eyes (valid for any bit pattern) and
// is designed for concurrent access from several processes once initialised PROCESS_SHARED;
// the other fields are atomics; there are no pointers (glibc's robust-list links inside the
// mutex are only followed by the owning thread, in its own address space).
unsafe impl ShmSafe for RawLock {}
// SAFETY: see above: all shared mutation goes through pthread calls or atomics.
unsafe impl Sync for RawLock {}

impl RawLock {
    /// Initialises the mutex (robust, process-shared; recursive if asked). Call exactly once,
    /// before any other process can reach the lock (inside `create_with`/`anonymous_with`).
    pub fn init(&self, recursive: bool) -> Result<(), SegmentError> {
        let os = |call, r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(SegmentError::Io {
                    call,
                    errno: Errno::from_raw(r),
                })
            }
        };
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is initialised by pthread_mutexattr_init before use and destroyed after;
        // the mutex memory is ours to initialise (no one else can see it before publication).
        unsafe {
            os(
                "pthread_mutexattr_init",
                libc::pthread_mutexattr_init(attr.as_mut_ptr()),
            )?;
            let a = attr.as_mut_ptr();
            let result = (|| {
                os(
                    "pthread_mutexattr_setpshared",
                    libc::pthread_mutexattr_setpshared(a, libc::PTHREAD_PROCESS_SHARED),
                )?;
                os(
                    "pthread_mutexattr_setrobust",
                    libc::pthread_mutexattr_setrobust(a, libc::PTHREAD_MUTEX_ROBUST),
                )?;
                let ty = if recursive {
                    libc::PTHREAD_MUTEX_RECURSIVE
                } else {
                    libc::PTHREAD_MUTEX_NORMAL
                };
                os(
                    "pthread_mutexattr_settype",
                    libc::pthread_mutexattr_settype(a, ty),
                )?;
                os(
                    "pthread_mutex_init",
                    libc::pthread_mutex_init(self.mutex.get(), a),
                )
            })();
            libc::pthread_mutexattr_destroy(a);
            result?;
        }
        self.inconsistent.store(0, Ordering::Relaxed);
        let kind = if recursive {
            KIND_RECURSIVE
        } else {
            KIND_PLAIN
        };
        self.kind.store(kind, Ordering::Release);
        Ok(())
    }

    /// Blocks until the lock is acquired.
    pub fn lock(&self) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.lock_until(None)
    }

    /// Acquires the lock if it is free right now.
    pub fn try_lock(&self) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        // SAFETY: the mutex was initialised by `init` before the segment was published.
        let r = unsafe { libc::pthread_mutex_trylock(self.mutex.get()) };
        if r == libc::EBUSY {
            return Err(LockError::WouldBlock);
        }
        self.acquired("pthread_mutex_trylock", r)
    }

    /// Blocks until the lock is acquired or `timeout` has passed.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.lock_until(Some(Instant::now() + timeout))
    }

    /// Waits for the lock in naps of at most [`LOCK_NAP`]. An owner killed in the middle of
    /// unlocking (after freeing the mutex word, before waking a waiter) can leave a waiter
    /// asleep on a free mutex — the kernel's robust-futex cleanup does not always catch that
    /// window (mproc's fault-injection test hit it); waking up to try again bounds the cost
    /// to one nap.
    fn lock_until(
        &self,
        deadline: Option<Instant>,
    ) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        match self.try_lock() {
            Err(LockError::WouldBlock) => {}
            other => return other,
        }
        loop {
            let now = Instant::now();
            let until = deadline.map_or(now + LOCK_NAP, |d| d.min(now + LOCK_NAP));
            // pthread_mutex_timedlock takes an absolute CLOCK_REALTIME time.
            let at = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_add(until.saturating_duration_since(now));
            let ts = libc::timespec {
                tv_sec: at.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: at.subsec_nanos() as libc::c_long,
            };
            // SAFETY: as in `try_lock`; `ts` is a valid absolute time.
            let r = unsafe { libc::pthread_mutex_timedlock(self.mutex.get(), &ts) };
            if r != libc::ETIMEDOUT {
                return self.acquired("pthread_mutex_timedlock", r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(LockError::Timeout);
            }
        }
    }

    /// Turns a pthread result into a guard, handling owner death.
    fn acquired(
        &self,
        call: &'static str,
        r: libc::c_int,
    ) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        match r {
            0 => {
                let guard = RawGuard::new(self);
                // SYNC POINT: the flag is written by lock holders only (under the mutex), so
                // the mutex's own acquire ordering makes the latest value visible here.
                if self.inconsistent.load(Ordering::Relaxed) != 0 {
                    Err(LockError::OwnerDied(guard))
                } else {
                    Ok(guard)
                }
            }
            libc::EOWNERDEAD => {
                // We own the mutex. Record the death first, then repair the pthread state, so
                // that dying between the two steps still leaves the death recorded.
                self.inconsistent.store(1, Ordering::Relaxed);
                // SAFETY: we hold the mutex after EOWNERDEAD, as pthread_mutex_consistent needs.
                unsafe { libc::pthread_mutex_consistent(self.mutex.get()) };
                Err(LockError::OwnerDied(RawGuard::new(self)))
            }
            libc::ENOTRECOVERABLE => Err(LockError::Unrecoverable),
            libc::EDEADLK => Err(LockError::Os {
                call,
                errno: Errno::EDEADLK,
            }),
            e => Err(LockError::Os {
                call,
                errno: Errno::from_raw(e),
            }),
        }
    }

    /// Whether an owner death is unresolved (no `make_consistent` since).
    pub fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Relaxed) != 0
    }

    /// Unlocks once. Fails with `NotOwner` when the calling thread does not hold a recursive
    /// lock. (A plain lock is only unlocked through its guard.)
    fn unlock(&self) -> Result<(), LockError<()>> {
        // SAFETY: called only by a guard, or by `RLock::release` which pthread checks itself
        // (recursive mutexes return EPERM for a non-owner).
        let r = unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        match r {
            0 => Ok(()),
            libc::EPERM => Err(LockError::NotOwner),
            e => Err(LockError::Os {
                call: "pthread_mutex_unlock",
                errno: Errno::from_raw(e),
            }),
        }
    }
}

/// Proof that the calling thread holds a [`RawLock`]; unlocks on drop. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RawGuard<'a> {
    lock: &'a RawLock,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RawGuard<'a> {
    fn new(lock: &'a RawLock) -> Self {
        RawGuard {
            lock,
            _not_send: PhantomData,
        }
    }

    /// Declares the protected data consistent again after an owner death: later lockers get
    /// `Ok` instead of `OwnerDied`.
    pub fn make_consistent(&self) {
        self.lock.inconsistent.store(0, Ordering::Relaxed);
    }

    /// Unlocks without dropping (used by `Condition::wait`, which relocks later).
    pub(crate) fn lock_ref(&self) -> &'a RawLock {
        self.lock
    }
}

impl Drop for RawGuard<'_> {
    fn drop(&mut self) {
        // Unlocking a mutex this thread holds cannot fail.
        let _ = self.lock.unlock();
    }
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLock")
            .field("inconsistent", &self.is_inconsistent())
            .finish_non_exhaustive()
    }
}

/// Guard of a [`Lock`]: the lock is held until it is dropped.
pub type LockGuard<'a> = RawGuard<'a>;

/// A cross-process mutual-exclusion lock that survives the death of its holder — Python's
/// `multiprocessing.Lock`, but a SIGKILLed holder does not leave it locked forever.
///
/// ```
/// use mproc_sync::Lock;
/// let lock = Lock::new()?;                 // anonymous: share with children through fork
/// {
///     let _guard = lock.lock().map_err(|e| e.to_string())?;
///     // ... critical section ...
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// When the previous holder died, `lock`, `try_lock` and `lock_timeout` return
/// `Err(LockError::OwnerDied(guard))`: the lock is held, and the caller checks or repairs the
/// protected data, then calls `guard.make_consistent()`.
#[derive(Debug)]
pub struct Lock(Placed<RawLock>);

impl Primitive for RawLock {
    const KIND: Kind = Kind::LOCK;
    const TYPE_NAME: &'static str = "mproc_sync::RawLock/1";
}

impl Lock {
    /// A lock in a new anonymous segment (children get it through `fork`).
    pub fn new() -> Result<Lock, SegmentError> {
        Placed::anonymous(|l: &RawLock| l.init(false)).map(Lock)
    }

    /// A lock in a new named segment.
    pub fn create(name: &str) -> Result<Lock, SegmentError> {
        Placed::create(name, |l: &RawLock| l.init(false)).map(Lock)
    }

    /// Opens a lock created by another process.
    pub fn open(name: &str) -> Result<Lock, SegmentError> {
        let placed = Placed::<RawLock>::open(name)?;
        if placed.get().kind.load(Ordering::Acquire) != KIND_PLAIN {
            return Err(SegmentError::CorruptHeader {
                reason: "lock segment does not hold an initialised lock",
            });
        }
        Ok(Lock(placed))
    }

    /// Blocks until the lock is held.
    pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().lock()
    }

    /// Takes the lock if it is free now; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().try_lock()
    }

    /// Blocks at most `timeout`; `Err(Timeout)` if the lock was not acquired in time.
    pub fn lock_timeout(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().lock_timeout(timeout)
    }

    /// Whether an owner died and no one has called `make_consistent` since.
    pub fn is_inconsistent(&self) -> bool {
        self.0.get().is_inconsistent()
    }

    /// The segment the lock lives in.
    pub fn segment(&self) -> &Segment {
        self.0.segment()
    }

    /// The in-memory lock, for code that places locks inside its own structures.
    pub fn raw(&self) -> &RawLock {
        self.0.get()
    }
}

/// A re-entrant cross-process lock (Python's `multiprocessing.RLock`): the thread that holds
/// it may acquire it again; it is free once released as many times as acquired. Releasing it
/// from a thread that does not hold it is an error. Owner death is handled as for [`Lock`].
///
/// ```
/// use mproc_sync::RLock;
/// let r = RLock::new()?;
/// r.acquire().map_err(|e| e.to_string())?;
/// r.acquire().map_err(|e| e.to_string())?;     // re-entrant
/// r.release()?;
/// r.release()?;
/// assert!(r.release().is_err());              // not held any more
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RLock(Placed<RLockCell>);

/// A [`RawLock`] initialised recursive; a separate type so that its segment kind differs.
#[repr(transparent)]
#[derive(Debug)]
pub struct RLockCell(RawLock);

// SAFETY: a transparent wrapper of a ShmSafe type.
unsafe impl ShmSafe for RLockCell {}

impl Primitive for RLockCell {
    const KIND: Kind = Kind::RLOCK;
    const TYPE_NAME: &'static str = "mproc_sync::RLock/1";
}

impl RLock {
    /// A re-entrant lock in a new anonymous segment.
    pub fn new() -> Result<RLock, SegmentError> {
        Placed::anonymous(|l: &RLockCell| l.0.init(true)).map(RLock)
    }

    /// A re-entrant lock in a new named segment.
    pub fn create(name: &str) -> Result<RLock, SegmentError> {
        Placed::create(name, |l: &RLockCell| l.0.init(true)).map(RLock)
    }

    /// Opens a re-entrant lock created by another process.
    pub fn open(name: &str) -> Result<RLock, SegmentError> {
        let placed = Placed::<RLockCell>::open(name)?;
        if placed.get().0.kind.load(Ordering::Acquire) != KIND_RECURSIVE {
            return Err(SegmentError::CorruptHeader {
                reason: "rlock segment does not hold an initialised re-entrant lock",
            });
        }
        Ok(RLock(placed))
    }

    /// Acquires (blocking); call [`release`](RLock::release) once per successful acquire,
    /// `OwnerDied` included.
    pub fn acquire(&self) -> Result<(), LockError<()>> {
        self.0
            .get()
            .0
            .lock()
            .map(std::mem::forget)
            .map_err(|e| e.map(std::mem::forget))
    }

    /// Acquires if free (or already held by this thread); `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<(), LockError<()>> {
        self.0
            .get()
            .0
            .try_lock()
            .map(std::mem::forget)
            .map_err(|e| e.map(std::mem::forget))
    }

    /// Acquires, waiting at most `timeout`; `Err(Timeout)` otherwise.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), LockError<()>> {
        self.0
            .get()
            .0
            .lock_timeout(timeout)
            .map(std::mem::forget)
            .map_err(|e| e.map(std::mem::forget))
    }

    /// Releases one level; `Err(NotOwner)` if this thread does not hold the lock.
    pub fn release(&self) -> Result<(), LockError<()>> {
        self.0.get().0.unlock()
    }

    /// Acquires and returns a guard that releases one level on drop.
    pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().0.lock()
    }

    /// Declares the protected data consistent after an owner death. Only meaningful while
    /// this thread holds the lock.
    pub fn make_consistent(&self) {
        self.0.get().0.inconsistent.store(0, Ordering::Relaxed);
    }

    /// Whether an owner died and no one has called `make_consistent` since.
    pub fn is_inconsistent(&self) -> bool {
        self.0.get().0.is_inconsistent()
    }
}
