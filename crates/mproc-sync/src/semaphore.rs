//! `Semaphore` and `BoundedSemaphore` (Python's `multiprocessing.Semaphore` and
//! `BoundedSemaphore`).

use std::time::{Duration, Instant};

use crate::SemaphoreError;
use crate::atomic::{AtomicU32, Ordering};
use crate::park::Parking;

/// The in-memory form of a semaphore, `#[repr(C)]`, 16 bytes, 4-aligned.
///
/// Fields: `value` (the count; decremented by acquirers with a CAS, incremented by `release`,
/// both SeqCst), `bound` (0 = unbounded; written once at creation), `parking` (where
/// acquirers sleep; see [`Parking`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawSemaphore {
    value: AtomicU32,
    bound: AtomicU32,
    parking: Parking,
}

impl RawSemaphore {
    /// A semaphore with `value` permits and, if `bound` is `Some`, a maximum value.
    pub fn new(value: u32, bound: Option<u32>) -> RawSemaphore {
        let s = RawSemaphore::default();
        s.init(value, bound);
        s
    }

    /// Sets the initial value and bound (before others can see the semaphore).
    pub fn init(&self, value: u32, bound: Option<u32>) {
        self.value.store(value, Ordering::Relaxed);
        self.bound.store(bound.unwrap_or(0), Ordering::Relaxed);
    }

    /// Takes a permit if one is available now.
    pub fn try_acquire(&self) -> bool {
        let mut v = self.value.load(Ordering::Relaxed);
        while v > 0 {
            match self
                .value
                .compare_exchange_weak(v, v - 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => v = now,
            }
        }
        false
    }

    /// Blocks until a permit is taken.
    pub fn acquire(&self) {
        let _ = self.acquire_deadline(None);
    }

    /// Blocks at most `timeout`; returns whether a permit was taken.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.acquire_deadline(Some(Instant::now() + timeout))
    }

    fn acquire_deadline(&self, deadline: Option<Instant>) -> bool {
        self.parking
            .block_on(deadline, || self.try_acquire().then_some(()))
            .is_some()
    }

    /// Returns a permit and wakes one waiter. With a bound, fails (changing nothing) if the
    /// value would exceed it.
    pub fn release(&self) -> Result<(), SemaphoreError> {
        let bound = self.bound.load(Ordering::Relaxed);
        if bound == 0 {
            // SYNC POINT: SeqCst increment, then `wake_one` reads the waiter count.
            self.value.fetch_add(1, Ordering::SeqCst);
        } else {
            let mut v = self.value.load(Ordering::Relaxed);
            loop {
                if v >= bound {
                    return Err(SemaphoreError::OverRelease { bound });
                }
                match self.value.compare_exchange_weak(
                    v,
                    v + 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => v = now,
                }
            }
        }
        self.parking.wake_one();
        Ok(())
    }

    /// The current number of permits (a snapshot).
    pub fn value(&self) -> u32 {
        self.value.load(Ordering::Relaxed)
    }

    /// Takes a permit without blocking a thread (the `async` feature). Dropping the future
    /// before it completes takes nothing.
    #[cfg(all(feature = "async", not(loom)))]
    pub fn acquire_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        crate::park::wait_async(
            [Some(&self.parking), None],
            crate::naps::PARKING,
            move |_| self.try_acquire().then_some(()),
        )
    }

    /// Where waiters for a permit sleep (for [`crate::Waitable`]).
    #[cfg(all(feature = "async", not(loom)))]
    pub(crate) fn parking(&self) -> &Parking {
        &self.parking
    }
}

#[cfg(not(loom))]
mod handle {
    use std::time::Duration;

    use mproc_segment::{Kind, SegmentError, ShmSafe};

    use super::RawSemaphore;
    use crate::SemaphoreError;
    use crate::placed::{Placed, Primitive};

    // SAFETY: four atomics; any bit pattern is some count, bound, sequence and waiter count.
    unsafe impl ShmSafe for RawSemaphore {}

    impl Primitive for RawSemaphore {
        const KIND: Kind = Kind::SEMAPHORE;
        const TYPE_NAME: &'static str = "mproc_sync::Semaphore/1";
    }

    /// A counting semaphore shared between processes (Python's `multiprocessing.Semaphore`).
    ///
    /// A process killed while holding permits does not return them (as in Python); use a
    /// [`Lock`](crate::Lock) where a holder's death must be detected.
    ///
    /// ```
    /// use mproc_sync::Semaphore;
    /// let s = Semaphore::new(2)?;
    /// assert!(s.try_acquire() && s.try_acquire() && !s.try_acquire());
    /// s.release();
    /// assert_eq!(s.value(), 1);
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    #[derive(Debug)]
    pub struct Semaphore(Placed<RawSemaphore>);

    impl Semaphore {
        /// A semaphore with `value` permits, in a new anonymous segment.
        pub fn new(value: u32) -> Result<Semaphore, SegmentError> {
            Placed::anonymous(|s: &RawSemaphore| {
                s.init(value, None);
                Ok(())
            })
            .map(Semaphore)
        }

        /// A semaphore with `value` permits, in a new named segment.
        pub fn create(name: &str, value: u32) -> Result<Semaphore, SegmentError> {
            Self::create_as(name, value, false)
        }

        /// As [`create`](Self::create), never reclaiming a stale segment of that name.
        ///
        /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
        /// with `AlreadyExists`, and the old contents stay for you to inspect (as
        /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
        pub fn create_exclusive(name: &str, value: u32) -> Result<Semaphore, SegmentError> {
            Self::create_as(name, value, true)
        }

        fn create_as(name: &str, value: u32, exclusive: bool) -> Result<Semaphore, SegmentError> {
            Placed::create_as(name, exclusive, |s: &RawSemaphore| {
                s.init(value, None);
                Ok(())
            })
            .map(Semaphore)
        }

        /// Opens a semaphore created by another process.
        pub fn open(name: &str) -> Result<Semaphore, SegmentError> {
            Placed::open(name).map(Semaphore)
        }

        /// Blocks until a permit is taken.
        pub fn acquire(&self) {
            self.0.get().acquire()
        }

        /// Takes a permit if one is free now.
        pub fn try_acquire(&self) -> bool {
            self.0.get().try_acquire()
        }

        /// Waits at most `timeout` for a permit; `true` if one was taken.
        pub fn acquire_timeout(&self, timeout: Duration) -> bool {
            self.0.get().acquire_timeout(timeout)
        }

        /// Returns a permit, waking one waiter.
        pub fn release(&self) {
            // Unbounded: release cannot fail.
            let _ = self.0.get().release();
        }

        /// The number of free permits now.
        pub fn value(&self) -> u32 {
            self.0.get().value()
        }

        /// Takes a permit without blocking a thread (the `async` feature); see
        /// [`RawSemaphore::acquire_async`].
        #[cfg(feature = "async")]
        pub fn acquire_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
            self.0.get().acquire_async()
        }

        /// The segment the semaphore lives in: its name, header and descriptor (nothing that touches the
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

    /// Ready when a permit is free (a select takes none).
    #[cfg(feature = "async")]
    impl crate::Waitable for Semaphore {
        fn is_ready(&self) -> bool {
            self.value() > 0
        }

        fn register(&self, waker: &std::task::Waker) -> crate::Registration<'_> {
            crate::Waitable::register(self.0.get(), waker)
        }
    }

    /// A semaphore whose value may never exceed its initial value: releasing more than was
    /// acquired is an error (Python's `multiprocessing.BoundedSemaphore`).
    ///
    /// ```
    /// use mproc_sync::{BoundedSemaphore, SemaphoreError};
    /// let s = BoundedSemaphore::new(1)?;
    /// assert_eq!(s.release(), Err(SemaphoreError::OverRelease { bound: 1 }));
    /// s.acquire();
    /// assert_eq!(s.release(), Ok(()));
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    #[derive(Debug)]
    pub struct BoundedSemaphore(Placed<BoundedCell>);

    /// A [`RawSemaphore`] with a bound; its own type so that its type name differs (same
    /// segment kind): a `Semaphore` and a `BoundedSemaphore` refuse to open each other.
    #[repr(transparent)]
    #[derive(Debug)]
    pub struct BoundedCell(RawSemaphore);

    // SAFETY: a transparent wrapper of a ShmSafe type.
    unsafe impl ShmSafe for BoundedCell {}

    impl Primitive for BoundedCell {
        const KIND: Kind = Kind::SEMAPHORE;
        const TYPE_NAME: &'static str = "mproc_sync::BoundedSemaphore/1";
    }

    fn init_bounded(value: u32) -> impl FnOnce(&BoundedCell) -> Result<(), SegmentError> {
        move |s| {
            if value == 0 {
                return Err(SegmentError::InvalidArgument {
                    reason: "a bounded semaphore needs an initial value of at least 1",
                });
            }
            s.0.init(value, Some(value));
            Ok(())
        }
    }

    impl BoundedSemaphore {
        /// A bounded semaphore with `value` (>= 1) permits, in a new anonymous segment.
        pub fn new(value: u32) -> Result<BoundedSemaphore, SegmentError> {
            Placed::anonymous(init_bounded(value)).map(BoundedSemaphore)
        }

        /// A bounded semaphore with `value` (>= 1) permits, in a new named segment.
        pub fn create(name: &str, value: u32) -> Result<BoundedSemaphore, SegmentError> {
            Placed::create(name, init_bounded(value)).map(BoundedSemaphore)
        }

        /// As [`create`](Self::create), never reclaiming a stale segment of that name.
        ///
        /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
        /// with `AlreadyExists`, and the old contents stay for you to inspect (as
        /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
        pub fn create_exclusive(name: &str, value: u32) -> Result<BoundedSemaphore, SegmentError> {
            Placed::create_as(name, true, init_bounded(value)).map(BoundedSemaphore)
        }

        /// Opens a bounded semaphore created by another process.
        pub fn open(name: &str) -> Result<BoundedSemaphore, SegmentError> {
            Placed::open(name).map(BoundedSemaphore)
        }

        /// Blocks until a permit is taken.
        pub fn acquire(&self) {
            self.0.get().0.acquire()
        }

        /// Takes a permit if one is free now.
        pub fn try_acquire(&self) -> bool {
            self.0.get().0.try_acquire()
        }

        /// Waits at most `timeout` for a permit; `true` if one was taken.
        pub fn acquire_timeout(&self, timeout: Duration) -> bool {
            self.0.get().0.acquire_timeout(timeout)
        }

        /// Returns a permit; `Err(OverRelease)` (and no change) if all permits are already free.
        pub fn release(&self) -> Result<(), SemaphoreError> {
            self.0.get().0.release()
        }

        /// The number of free permits now.
        pub fn value(&self) -> u32 {
            self.0.get().0.value()
        }

        /// Takes a permit without blocking a thread (the `async` feature); see
        /// [`RawSemaphore::acquire_async`].
        #[cfg(feature = "async")]
        pub fn acquire_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
            self.0.get().0.acquire_async()
        }
    }
}
#[cfg(not(loom))]
pub use handle::{BoundedCell, BoundedSemaphore, Semaphore};
