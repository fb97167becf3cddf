//! `Event`: a flag processes can wait for (Python's `multiprocessing.Event`).

use std::time::{Duration, Instant};

use crate::atomic::{AtomicU32, Ordering};
use crate::park::Parking;

/// The in-memory form of an event, `#[repr(C)]`, 12 bytes, 4-aligned; all-zero is a valid
/// cleared event.
///
/// Fields: `state` (0 clear, 1 set; written by `set`/`clear` with SeqCst), `parking` (where
/// waiters sleep; see [`Parking`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawEvent {
    state: AtomicU32,
    parking: Parking,
}

impl RawEvent {
    /// A cleared event (for in-process use and models; in shared memory, zeroed memory is one).
    pub fn new() -> RawEvent {
        RawEvent::default()
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        // SYNC POINT: SeqCst state change, then `wake_all` reads the waiter count (the
        // `Parking` protocol).
        if self.state.swap(1, Ordering::SeqCst) == 0 {
            self.parking.wake_all();
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.state.store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == 1
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        let _ = self.wait_deadline(None);
    }

    /// Blocks until the flag is set or `timeout` passes; returns whether it is set.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Waits for the flag without blocking a thread (the `async` feature): the future
    /// completes once the flag is set. Dropping it cancels the wait and leaves nothing behind.
    #[cfg(all(feature = "async", not(loom)))]
    pub fn wait_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        crate::park::wait_async(
            [Some(&self.parking), None],
            crate::naps::PARKING,
            move |_| self.is_set().then_some(()),
        )
    }

    /// The parking place `set` wakes (for [`crate::Waitable`]).
    #[cfg(all(feature = "async", not(loom)))]
    pub(crate) fn parking(&self) -> &Parking {
        &self.parking
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        self.parking
            .block_on(deadline, || self.is_set().then_some(()))
            .is_some()
    }
}

#[cfg(not(loom))]
mod handle {
    use std::time::Duration;

    use mproc_segment::{Kind, SegmentError, ShmSafe};

    use super::RawEvent;
    use crate::placed::{Placed, Primitive};

    // SAFETY: three atomics; zero is a cleared event, any other bit pattern is "set", some
    // sequence number or a waiter count (a wrong count only costs a spurious system call).
    unsafe impl ShmSafe for RawEvent {}

    impl Primitive for RawEvent {
        const KIND: Kind = Kind::EVENT;
        const TYPE_NAME: &'static str = "mproc_sync::Event/1";
    }

    /// A flag that processes set, clear and wait for (Python's `multiprocessing.Event`).
    /// Waiting sleeps in the kernel after a brief spin; `set` wakes every waiter, and costs no
    /// system call when nobody waits.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mproc_sync::Event;
    /// let ev = Event::new()?;
    /// assert!(!ev.wait_timeout(Duration::from_millis(1)));
    /// ev.set();
    /// assert!(ev.is_set() && ev.wait_timeout(Duration::from_millis(1)));
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    #[derive(Debug)]
    pub struct Event(Placed<RawEvent>);

    impl Event {
        /// A cleared event in a new anonymous segment.
        pub fn new() -> Result<Event, SegmentError> {
            Placed::anonymous(|_| Ok(())).map(Event)
        }

        /// A cleared event in a new named segment.
        pub fn create(name: &str) -> Result<Event, SegmentError> {
            Placed::create(name, |_| Ok(())).map(Event)
        }

        /// As [`create`](Self::create), never reclaiming a stale segment of that name.
        ///
        /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
        /// with `AlreadyExists`, and the old contents stay for you to inspect (as
        /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
        pub fn create_exclusive(name: &str) -> Result<Event, SegmentError> {
            Placed::create_as(name, true, |_| Ok(())).map(Event)
        }

        /// Opens an event created by another process.
        pub fn open(name: &str) -> Result<Event, SegmentError> {
            Placed::open(name).map(Event)
        }

        /// Sets the flag and wakes all waiters.
        pub fn set(&self) {
            self.0.get().set()
        }

        /// Clears the flag.
        pub fn clear(&self) {
            self.0.get().clear()
        }

        /// Whether the flag is set.
        pub fn is_set(&self) -> bool {
            self.0.get().is_set()
        }

        /// Blocks until the flag is set.
        pub fn wait(&self) {
            self.0.get().wait()
        }

        /// Blocks until the flag is set or `timeout` passes; `true` if it is set.
        pub fn wait_timeout(&self, timeout: Duration) -> bool {
            self.0.get().wait_timeout(timeout)
        }

        /// Waits for the flag without blocking a thread (the `async` feature); see
        /// [`RawEvent::wait_async`].
        ///
        /// ```
        /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
        /// #     let mut f = std::pin::pin!(f);
        /// #     let w = std::task::Waker::noop();
        /// #     let mut cx = std::task::Context::from_waker(w);
        /// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v } }
        /// # }
        /// let ev = mproc_sync::Event::new()?;
        /// ev.set();
        /// block_on(ev.wait_async());
        /// # Ok::<(), mproc_segment::SegmentError>(())
        /// ```
        #[cfg(feature = "async")]
        pub fn wait_async(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
            self.0.get().wait_async()
        }

        /// The event itself, in its segment.
        pub fn raw(&self) -> &RawEvent {
            self.0.get()
        }

        /// The segment the event lives in: its name, header and descriptor (nothing that touches the
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
}
#[cfg(not(loom))]
pub use handle::Event;
