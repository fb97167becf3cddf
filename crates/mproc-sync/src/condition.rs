//! `Condition`: a condition variable bundled with its robust lock (Python's
//! `multiprocessing.Condition`).

use std::time::{Duration, Instant};

use mproc_segment::{Kind, SegmentError, ShmSafe};

use crate::LockError;
use crate::lock::LockGuard;
use crate::park::Parking;
use crate::placed::{Placed, Primitive};
use crate::raw_lock::RawLock;

/// The in-memory form of a condition, `#[repr(C)]`, 56 bytes, 8-aligned.
///
/// Fields: `lock` (the robust mutex waiters hold around their predicate), `parking` (where
/// waiters sleep: the same [`Parking`] protocol as every other wait; its sequence word is
/// bumped by a notify that finds waiters).
#[repr(C)]
#[derive(Debug)]
pub struct RawCondition {
    lock: RawLock,
    parking: Parking,
}

const _: () = assert!(std::mem::size_of::<RawCondition>() == 56);

// SAFETY: a ShmSafe lock plus a Parking (two atomics; any bit pattern is some sequence and
// waiter count).
unsafe impl ShmSafe for RawCondition {}

impl Primitive for RawCondition {
    const KIND: Kind = Kind::CONDITION;
    const TYPE_NAME: &'static str = "mproc_sync::Condition/1";
}

/// A guarded wait result: the re-acquired guard, or the lock error that re-acquiring met.
pub type WaitResult<'a, T> = Result<T, LockError<LockGuard<'a>>>;

impl RawCondition {
    /// Marks the condition's zero-filled lock plain (see [`RawLock::init`]): `false` if it
    /// already was.
    pub fn init(&self) -> bool {
        self.lock.init(false)
    }

    /// Atomically releases `guard`'s lock and sleeps until notified (or spuriously), then
    /// re-acquires the lock. `guard` must come from this condition's [`lock`](Self::lock).
    fn wait_deadline<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Option<Instant>,
    ) -> WaitResult<'a, (LockGuard<'a>, bool)> {
        debug_assert!(std::ptr::eq(guard.lock_ref(), &self.lock));
        // SYNC POINT: count ourselves and note the sequence while still holding the lock; a
        // notifier that changes the predicate under the lock and then notifies either runs
        // before this (and the caller saw its predicate change) or sees us counted and moves
        // the sequence, and the futex refuses to sleep.
        let waiting = self.parking.prepare();
        drop(guard);
        // Sleep in naps (see `park::nap_until`): a notifier killed between its bump and its
        // wake costs this waiter one nap, not its life.
        let in_time = loop {
            if waiting.sleep(crate::park::nap_until(deadline)) {
                break true;
            }
            if crate::Deadline::at(deadline).passed() {
                break false;
            }
        };
        drop(waiting);
        let guard = self.lock.lock()?;
        Ok((guard, !in_time))
    }

    /// Wakes one waiter (possibly more: waits may wake spuriously).
    ///
    /// SYNC POINT: the SeqCst bump of `seq` then the SeqCst read of `waiters`. A waiter this
    /// read misses had read `seq` before the bump, so the kernel does not let it sleep.
    pub fn notify_one(&self) {
        self.parking.wake_one();
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.parking.wake_all();
    }
}

/// A condition variable with its own robust lock, shared between processes.
///
/// Hold the lock (`lock()`), test a predicate, and `wait` while it is false; another process
/// changes the state under the lock and calls `notify_one` / `notify_all`. Waits can wake
/// spuriously: prefer [`wait_while`](Condition::wait_while).
///
/// ```
/// use std::time::Duration;
/// use mproc_sync::Condition;
/// let cond = Condition::new()?;
/// let guard = cond.lock().map_err(|e| e.to_string())?;
/// let (guard, timed_out) = cond.wait_timeout(guard, Duration::from_millis(5)).map_err(|e| e.to_string())?;
/// assert!(timed_out);
/// drop(guard);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// If a process dies holding the lock, the next `lock` (or the re-acquisition inside a
/// `wait`) reports [`LockError::OwnerDied`], as with [`Lock`](crate::Lock).
#[derive(Debug)]
pub struct Condition(Placed<RawCondition>);

impl Condition {
    /// A condition in a new anonymous segment.
    pub fn new() -> Result<Condition, SegmentError> {
        Placed::anonymous(|c: &RawCondition| crate::placed::fresh(c.init())).map(Condition)
    }

    /// A condition in a new named segment.
    pub fn create(name: &str) -> Result<Condition, SegmentError> {
        Self::create_as(name, false)
    }

    /// As [`create`](Self::create), never reclaiming a stale segment of that name.
    ///
    /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
    /// with `AlreadyExists`, and the old contents stay for you to inspect (as
    /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
    pub fn create_exclusive(name: &str) -> Result<Condition, SegmentError> {
        Self::create_as(name, true)
    }

    fn create_as(name: &str, exclusive: bool) -> Result<Condition, SegmentError> {
        Placed::create_as(name, exclusive, |c: &RawCondition| {
            crate::placed::fresh(c.init())
        })
        .map(Condition)
    }

    /// Opens a condition created by another process.
    pub fn open(name: &str) -> Result<Condition, SegmentError> {
        Placed::open(name).map(Condition)
    }

    /// Takes the condition's lock.
    pub fn lock(&self) -> Result<LockGuard<'_>, LockError<LockGuard<'_>>> {
        self.0.get().lock.lock()
    }

    /// Takes the condition's lock without blocking a thread (the `async` feature; see
    /// [`RawLock::lock_async`] for which thread then holds it).
    #[cfg(feature = "async")]
    pub fn lock_async(
        &self,
    ) -> impl std::future::Future<Output = Result<LockGuard<'_>, LockError<LockGuard<'_>>>> + '_
    {
        self.0.get().lock.lock_async()
    }

    /// Releases the lock, waits without blocking a thread until notified (or a 100 ms nap
    /// passes: a spurious wake-up, as condition variables allow), re-acquires the lock
    /// (the `async` feature). Check the predicate in a loop, as with [`wait`](Self::wait).
    ///
    /// A future dropped while waiting takes itself off the waiter count and passes on a
    /// `notify_one` it may have absorbed; dropped while re-acquiring, it holds nothing.
    #[cfg(feature = "async")]
    pub async fn wait_async<'a>(&'a self, guard: LockGuard<'a>) -> WaitResult<'a, LockGuard<'a>> {
        let raw = self.0.get();
        debug_assert!(std::ptr::eq(guard.lock_ref(), &raw.lock));
        // SYNC POINT: as in `wait_deadline`: counted, with the sequence noted, under the lock.
        let mut waiting = CondWaiting {
            waiting: Some(raw.parking.prepare()),
            watch: None,
        };
        drop(guard);
        std::future::poll_fn(|cx| {
            // Woken by a notify, or a nap passed (a spurious wake-up, which condition
            // variables allow); polled for another reason, keep waiting.
            if waiting
                .watch
                .take()
                .is_some_and(crate::reactor::WordWatch::finish)
            {
                return std::task::Poll::Ready(());
            }
            let Some(w) = waiting.waiting.as_ref() else {
                return std::task::Poll::Ready(());
            };
            if w.changed() {
                return std::task::Poll::Ready(());
            }
            waiting.watch = Some(crate::reactor::WordWatch::new(
                &raw.parking.seq,
                w.seen(),
                cx.waker(),
                crate::naps::PARKING,
            ));
            std::task::Poll::Pending
        })
        .await;
        drop(waiting);
        raw.lock.lock_async().await
    }

    /// Releases the lock, sleeps until notified, re-acquires the lock.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> WaitResult<'a, LockGuard<'a>> {
        self.0.get().wait_deadline(guard, None).map(|(g, _)| g)
    }

    /// As [`wait`](Condition::wait), for at most `timeout`; the `bool` is `true` if the wait
    /// timed out (the lock is held again either way).
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> WaitResult<'a, (LockGuard<'a>, bool)> {
        self.0
            .get()
            .wait_deadline(guard, Some(Instant::now() + timeout))
    }

    /// Waits while `condition()` is true (checked with the lock held), for at most `timeout`
    /// if given. Returns the guard and whether the condition is still true (timed out).
    pub fn wait_while<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        timeout: Option<Duration>,
        mut condition: impl FnMut() -> bool,
    ) -> WaitResult<'a, (LockGuard<'a>, bool)> {
        let deadline = timeout.map(|t| Instant::now() + t);
        while condition() {
            if crate::Deadline::at(deadline).passed() {
                return Ok((guard, true));
            }
            guard = self.0.get().wait_deadline(guard, deadline)?.0;
        }
        Ok((guard, false))
    }

    /// [`wait_timeout`](Self::wait_timeout) without a guard, for bindings (Python's
    /// `Condition.wait`): the calling thread holds this condition's lock, acquired through
    /// [`raw_lock`](Self::raw_lock) with its guard forgotten. Releases it, sleeps until
    /// notified, `timeout` passes, or `stop` (asked between naps of at most 50 ms) returns
    /// `true`, then holds the lock again, in every case. `Ok(true)`: notified (or woken
    /// spuriously); `Ok(false)`: timed out or stopped. `Err(OwnerDied)`: notified, and the
    /// lock is held, but a holder died.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = mproc_sync::Condition::new()?;
    /// std::mem::forget(cond.raw_lock().lock().map_err(|e| e.to_string())?);
    /// let notified = cond.wait_held(Some(Duration::from_millis(5)), || false)?;
    /// assert!(!notified);
    /// cond.raw_lock().unlock()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_held(
        &self,
        timeout: Option<Duration>,
        mut stop: impl FnMut() -> bool,
    ) -> Result<bool, LockError<()>> {
        let raw = self.0.get();
        let deadline = timeout.map(|t| Instant::now() + t);
        let waiting = raw.parking.prepare();
        raw.lock.unlock()?;
        let notified = loop {
            let nap = crate::Deadline::at(deadline).nap_end(Duration::from_millis(50));
            if waiting.sleep(Some(nap)) {
                break true;
            }
            if crate::Deadline::at(deadline).passed() || stop() {
                break false;
            }
        };
        drop(waiting);
        match raw.lock.lock() {
            Ok(g) => {
                std::mem::forget(g);
                Ok(notified)
            }
            Err(e) => Err(e.map(std::mem::forget)),
        }
    }

    /// The condition's lock, for [`wait_held`](Self::wait_held).
    pub fn raw_lock(&self) -> &RawLock {
        &self.0.get().lock
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.0.get().notify_one()
    }

    /// Wakes all waiters.
    pub fn notify_all(&self) {
        self.0.get().notify_all()
    }

    /// The segment the condition lives in: its name, header and descriptor (nothing that touches the
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
}

/// A `Condition::wait_async` counted among the waiters; dropping it uncounts it and, if its
/// registration had fired (it may have absorbed a `notify_one`), passes the wake-up on.
#[cfg(feature = "async")]
struct CondWaiting<'a> {
    /// Always `Some` until dropped.
    waiting: Option<crate::park::Waiting<'a>>,
    watch: Option<crate::reactor::WordWatch>,
}

#[cfg(feature = "async")]
impl Drop for CondWaiting<'_> {
    fn drop(&mut self) {
        let fired = self
            .watch
            .take()
            .is_some_and(crate::reactor::WordWatch::finish);
        // Uncounted first, so that the pass-on does not count us.
        let parking = self.waiting.take().map(|w| w.parking());
        if let (true, Some(p)) = (fired, parking) {
            p.wake_one();
        }
    }
}
