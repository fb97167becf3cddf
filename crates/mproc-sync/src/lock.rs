//! `Lock` and `RLock`: robust, process-shared mutexes in segments of their own, over
//! [`RawLock`] (see `raw_lock.rs` for the protocol).

use std::time::{Duration, Instant};

use mproc_segment::{Kind, SegmentError, ShmSafe};

use crate::LockError;
use crate::placed::{Placed, Primitive, fresh};
use crate::raw_lock::{RawGuard, RawLock};

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
        Placed::anonymous(|l: &RawLock| fresh(l.init(false))).map(Lock)
    }

    /// A lock in a new named segment.
    pub fn create(name: &str) -> Result<Lock, SegmentError> {
        Self::create_as(name, false)
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str) -> Result<Lock, SegmentError> {
        Self::create_as(name, true)
    }

    fn create_as(name: &str, exclusive: bool) -> Result<Lock, SegmentError> {
        Placed::create_as(name, exclusive, |l: &RawLock| fresh(l.init(false))).map(Lock)
    }

    /// Opens a lock created by another process.
    pub fn open(name: &str) -> Result<Lock, SegmentError> {
        let placed = Placed::<RawLock>::open(name)?;
        if placed.get().is_recursive() != Some(false) {
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

    /// Blocks until the lock is held; for `?` (see [`RawLock::lock_recover`]): a holder's
    /// death is reported by `guard.owner_died()`, not as an error.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let lock = mproc_sync::Lock::new()?;
    /// let guard = lock.lock_recover()?;
    /// if guard.owner_died() {
    ///     // check or repair the protected data, then:
    ///     guard.make_consistent();
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock_recover(&self) -> Result<LockGuard<'_>, LockError<()>> {
        self.0.get().lock_recover()
    }

    /// Takes the lock if it is free now; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().try_lock()
    }

    /// Acquires the lock without blocking a thread (the `async` feature); see
    /// [`RawLock::lock_async`] for which thread then holds it.
    #[cfg(feature = "async")]
    pub fn lock_async(
        &self,
    ) -> impl std::future::Future<Output = Result<LockGuard<'_>, LockError<LockGuard<'_>>>> + '_
    {
        self.0.get().lock_async()
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

    /// The segment the lock lives in: its name, header and descriptor (nothing that touches the
    /// bytes, see [`SegmentInfo`](mproc_segment::SegmentInfo)).
    pub fn segment(&self) -> mproc_segment::SegmentInfo<'_> {
        mproc_segment::SegmentInfo::of(self.0.segment())
    }

    /// The segment itself, whose `read_bytes`, `write_bytes` and `view` reach the
    /// object's bytes (for tools and tests).
    ///
    /// # Safety
    /// While this process uses the object (from any thread), nothing may access its bytes
    /// through the segment: the object's own accesses are partly non-atomic, and a
    /// concurrent access is a data race. Another process may (it cannot race with this
    /// one's memory model; the object treats what it reads as untrusted).
    pub unsafe fn raw_segment(&self) -> &mproc_segment::Segment {
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
#[derive(Debug, Default)]
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
        Placed::anonymous(|l: &RLockCell| fresh(l.0.init(true))).map(RLock)
    }

    /// A re-entrant lock in a new named segment.
    pub fn create(name: &str) -> Result<RLock, SegmentError> {
        Self::create_as(name, false)
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str) -> Result<RLock, SegmentError> {
        Self::create_as(name, true)
    }

    fn create_as(name: &str, exclusive: bool) -> Result<RLock, SegmentError> {
        Placed::create_as(name, exclusive, |l: &RLockCell| fresh(l.0.init(true))).map(RLock)
    }

    /// Opens a re-entrant lock created by another process.
    pub fn open(name: &str) -> Result<RLock, SegmentError> {
        let placed = Placed::<RLockCell>::open(name)?;
        if placed.get().0.is_recursive() != Some(true) {
            return Err(SegmentError::CorruptHeader {
                reason: "rlock segment does not hold an initialised re-entrant lock",
            });
        }
        Ok(RLock(placed))
    }

    /// Acquires (blocking); call [`release`](RLock::release) once per successful acquire,
    /// `OwnerDied` included.
    pub fn acquire(&self) -> Result<(), LockError<()>> {
        self.0.get().0.acquire(None, false, true)
    }

    /// Acquires if free (or already held by this thread); `Err(WouldBlock)` otherwise.
    pub fn try_acquire(&self) -> Result<(), LockError<()>> {
        self.0.get().0.acquire(None, true, true)
    }

    /// Acquires, waiting at most `timeout`; `Err(Timeout)` otherwise.
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), LockError<()>> {
        self.0
            .get()
            .0
            .acquire(Some(Instant::now() + timeout), false, true)
    }

    /// Releases one level; `Err(NotOwner)` if this thread does not hold the lock.
    pub fn release(&self) -> Result<(), LockError<()>> {
        self.0.get().0.release(true)
    }

    /// Acquires and returns a guard that releases one level on drop.
    pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        let raw = &self.0.get().0;
        match raw.acquire(None, false, true) {
            Ok(()) => Ok(RawGuard::recursive(raw)),
            Err(e) => Err(e.map(|()| RawGuard::recursive(raw))),
        }
    }

    /// Declares the protected data consistent after an owner death. Only meaningful while
    /// this thread holds the lock.
    pub fn make_consistent(&self) {
        self.0.get().0.set_consistent();
    }

    /// Whether an owner died and no one has called `make_consistent` since.
    pub fn is_inconsistent(&self) -> bool {
        self.0.get().0.is_inconsistent()
    }
}
