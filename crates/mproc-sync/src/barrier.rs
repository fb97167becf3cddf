//! `Barrier`: `parties` processes wait until all have arrived (Python's
//! `multiprocessing.Barrier`).

use std::time::{Duration, Instant};

use crate::BarrierError;
use crate::atomic::{AtomicU32, Ordering};
use crate::park::Parking;

/// The in-memory form of a barrier, `#[repr(C)]`, 24 bytes, 4-aligned.
///
/// Fields: `parties` (written once), `arrived` (parties in the current generation,
/// `fetch_add` AcqRel), `generation` (bumped, SeqCst, when the last party arrives or the
/// barrier breaks or resets), `broken` (1 once broken; set before the bump), `parking` (where
/// parties sleep; see [`Parking`]).
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawBarrier {
    parties: AtomicU32,
    arrived: AtomicU32,
    generation: AtomicU32,
    broken: AtomicU32,
    parking: Parking,
}

impl RawBarrier {
    /// A barrier for `parties` parties.
    pub fn new(parties: u32) -> RawBarrier {
        let b = RawBarrier::default();
        b.init(parties);
        b
    }

    /// Sets the number of parties (before others can see the barrier).
    pub fn init(&self, parties: u32) {
        self.parties.store(parties, Ordering::Relaxed);
    }

    /// Waits for all parties; returns this party's arrival index (0 for the first to arrive,
    /// `parties - 1` for the last), or `Broken`.
    pub fn wait(&self) -> Result<u32, BarrierError> {
        self.wait_deadline(None)
    }

    /// As [`wait`](Self::wait), for at most `timeout`. On timeout the barrier breaks: this
    /// party gets `Timeout`, every other waiting party `Broken`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Arrives at the barrier: `Ok(Ok(index))` or `Ok(Err(..))` if this party was the last
    /// (or found it broken), `Err((generation, index))` if it must wait for `generation` to
    /// pass.
    fn arrive(&self) -> Result<Result<u32, BarrierError>, (u32, u32)> {
        // SYNC POINT: read the generation before arriving, so the bump by the last arrival
        // (which happens after our fetch_add) is seen as a change.
        let generation = self.generation.load(Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) != 0 {
            return Ok(Err(BarrierError::Broken));
        }
        let parties = self.parties.load(Ordering::Relaxed).max(1);
        let index = self.arrived.fetch_add(1, Ordering::AcqRel);
        if index + 1 >= parties {
            // Last to arrive: open the barrier for this generation and start the next.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            self.parking.wake_all();
            return Ok(self.passed(index));
        }
        Err((generation, index))
    }

    /// The outcome for a party with arrival `index` once its generation has passed.
    fn passed(&self, index: u32) -> Result<u32, BarrierError> {
        if self.broken.load(Ordering::SeqCst) != 0 {
            Err(BarrierError::Broken)
        } else {
            Ok(index)
        }
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<u32, BarrierError> {
        let (generation, index) = match self.arrive() {
            Ok(done) => return done,
            Err(waiting) => waiting,
        };
        let passed = self.parking.block_on(deadline, || {
            (self.generation.load(Ordering::SeqCst) != generation).then_some(())
        });
        if passed.is_none() {
            self.break_barrier();
            return Err(BarrierError::Timeout);
        }
        self.passed(index)
    }

    /// Arrives at the barrier and returns the arrival, to wait for the barrier to open in
    /// steps ([`BarrierArrival::wait_timeout`]) without breaking it between them: a caller
    /// that must look at something else while it waits (signals, a cancel flag) uses this.
    /// Dropping the arrival before the barrier opened breaks it, as a timed-out
    /// [`wait_timeout`](Self::wait_timeout) does.
    pub fn arrive_then(&self) -> BarrierArrival<'_> {
        BarrierArrival {
            barrier: self,
            state: match self.arrive() {
                Ok(done) => Arrival::Done(done),
                Err((generation, index)) => Arrival::Waiting { generation, index },
            },
        }
    }

    /// Waits for all parties without blocking a thread (the `async` feature): completes with
    /// what [`wait`](Self::wait) returns.
    ///
    /// The party arrives when the future is first polled. A party cannot leave a barrier
    /// quietly: dropping the future after it arrived and before the barrier opened breaks the
    /// barrier, as a timed-out wait does (the other parties get `Broken`).
    #[cfg(all(feature = "async", not(loom)))]
    pub fn wait_async(
        &self,
    ) -> impl std::future::Future<Output = Result<u32, BarrierError>> + Send + '_ {
        BarrierWait {
            barrier: self,
            waiting: None,
            done: false,
        }
    }

    fn break_barrier(&self) {
        self.broken.store(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.parking.wake_all();
    }

    /// Breaks the barrier on purpose: current and future waiters get `Broken` until `reset`.
    pub fn abort(&self) {
        self.break_barrier();
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst) != 0
    }

    /// Returns the barrier to its initial state. Parties waiting right now get `Broken`.
    pub fn reset(&self) {
        self.broken.store(1, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.parking.wake_all();
        self.arrived.store(0, Ordering::SeqCst);
        self.broken.store(0, Ordering::SeqCst);
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed)
    }

    /// How many parties are waiting now.
    pub fn n_waiting(&self) -> u32 {
        self.arrived.load(Ordering::Relaxed)
    }
}

/// Where an arrival stands.
#[derive(Debug, Clone, Copy)]
enum Arrival {
    /// Waiting for `generation` to pass; `index` is the arrival index.
    Waiting { generation: u32, index: u32 },
    /// The outcome, reported or not yet.
    Done(Result<u32, BarrierError>),
    /// The outcome was reported (or the barrier broken by `give_up`).
    Over,
}

/// A party that arrived at a barrier and waits for it to open, from
/// [`Barrier::arrive_then`] (or [`RawBarrier::arrive_then`]).
///
/// ```
/// use std::time::Duration;
/// use mproc_sync::Barrier;
/// let b = Barrier::new(1)?;
/// let mut arrival = b.arrive_then();
/// // One party: open at once.
/// assert_eq!(arrival.wait_timeout(Duration::from_millis(10)), Some(Ok(0)));
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct BarrierArrival<'a> {
    barrier: &'a RawBarrier,
    state: Arrival,
}

impl BarrierArrival<'_> {
    /// Waits at most `timeout` for the barrier to open: `Some` with what
    /// [`RawBarrier::wait`] returns, or `None` if it is still closed (the barrier stays
    /// whole: call again). After the outcome was returned once, `Some(Err(Broken))`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<u32, BarrierError>> {
        let b = self.barrier;
        let outcome = match self.state {
            Arrival::Waiting { generation, index } => {
                let passed = b.parking.block_on(Some(Instant::now() + timeout), || {
                    (b.generation.load(Ordering::SeqCst) != generation).then_some(())
                });
                passed?;
                b.passed(index)
            }
            Arrival::Done(done) => done,
            Arrival::Over => Err(BarrierError::Broken),
        };
        self.state = Arrival::Over;
        Some(outcome)
    }

    /// Stops waiting: the barrier breaks (the other parties get `Broken`), as when a
    /// [`wait_timeout`](RawBarrier::wait_timeout) times out. Dropping a waiting arrival
    /// does the same.
    pub fn give_up(mut self) {
        self.leave();
    }

    fn leave(&mut self) {
        if let Arrival::Waiting { generation, .. } = self.state {
            // Already open (the last party arrived after our last look): nothing to break.
            if self.barrier.generation.load(Ordering::SeqCst) == generation {
                self.barrier.break_barrier();
            }
        }
        self.state = Arrival::Over;
    }
}

impl Drop for BarrierArrival<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(not(loom))]
mod handle {
    use std::time::Duration;

    use mproc_segment::{Kind, SegmentError, ShmSafe};

    use super::RawBarrier;
    use crate::BarrierError;
    use crate::placed::{Placed, Primitive};

    // SAFETY: six atomics; any bit pattern is some (possibly nonsensical) state that the
    // methods handle without memory unsafety.
    unsafe impl ShmSafe for RawBarrier {}

    impl Primitive for RawBarrier {
        const KIND: Kind = Kind::BARRIER;
        const TYPE_NAME: &'static str = "mproc_sync::Barrier/1";
    }

    fn init(parties: u32) -> impl FnOnce(&RawBarrier) -> Result<(), SegmentError> {
        move |b| {
            if parties == 0 {
                return Err(SegmentError::InvalidArgument {
                    reason: "a barrier needs at least one party",
                });
            }
            b.init(parties);
            Ok(())
        }
    }

    /// A barrier for a fixed number of processes (Python's `multiprocessing.Barrier`).
    ///
    /// A party that dies never arrives: use [`wait_timeout`](Barrier::wait_timeout) where that
    /// can happen, so the others get `Timeout`/`Broken` instead of waiting forever.
    ///
    /// ```
    /// use mproc_sync::Barrier;
    /// let b = Barrier::new(1)?;
    /// assert_eq!(b.wait(), Ok(0));      // one party: passes at once
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    #[derive(Debug)]
    pub struct Barrier(Placed<RawBarrier>);

    impl Barrier {
        /// A barrier for `parties` (>= 1) parties in a new anonymous segment.
        pub fn new(parties: u32) -> Result<Barrier, SegmentError> {
            Placed::anonymous(init(parties)).map(Barrier)
        }

        /// A barrier for `parties` (>= 1) parties in a new named segment.
        pub fn create(name: &str, parties: u32) -> Result<Barrier, SegmentError> {
            Placed::create(name, init(parties)).map(Barrier)
        }

        /// As [`create`](Self::create), never reclaiming a stale segment of that name.
        ///
        /// A segment of that name left behind by a dead creator is not reclaimed: the call fails
        /// with `AlreadyExists`, and the old contents stay for you to inspect (as
        /// `SegmentOptions::fail_if_exists`; [`create`](Self::create) reclaims it).
        pub fn create_exclusive(name: &str, parties: u32) -> Result<Barrier, SegmentError> {
            Placed::create_as(name, true, init(parties)).map(Barrier)
        }

        /// Opens a barrier created by another process.
        pub fn open(name: &str) -> Result<Barrier, SegmentError> {
            Placed::open(name).map(Barrier)
        }

        /// Waits until all parties have arrived; returns this party's arrival index.
        pub fn wait(&self) -> Result<u32, BarrierError> {
            self.0.get().wait()
        }

        /// Arrives, to wait in steps; see [`RawBarrier::arrive_then`].
        pub fn arrive_then(&self) -> super::BarrierArrival<'_> {
            self.0.get().arrive_then()
        }

        /// Waits for all parties without blocking a thread (the `async` feature); see
        /// [`RawBarrier::wait_async`] for what dropping it early does.
        #[cfg(feature = "async")]
        pub fn wait_async(
            &self,
        ) -> impl std::future::Future<Output = Result<u32, BarrierError>> + Send + '_ {
            self.0.get().wait_async()
        }

        /// Waits at most `timeout`; on timeout the barrier breaks for everyone.
        pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierError> {
            self.0.get().wait_timeout(timeout)
        }

        /// Breaks the barrier: waiters get `Broken`.
        pub fn abort(&self) {
            self.0.get().abort()
        }

        /// Whether the barrier is broken.
        pub fn is_broken(&self) -> bool {
            self.0.get().is_broken()
        }

        /// Makes a broken barrier usable again (current waiters get `Broken`).
        pub fn reset(&self) {
            self.0.get().reset()
        }

        /// The number of parties.
        pub fn parties(&self) -> u32 {
            self.0.get().parties()
        }

        /// How many parties are waiting now.
        pub fn n_waiting(&self) -> u32 {
            self.0.get().n_waiting()
        }

        /// The segment the barrier lives in: its name, header and descriptor (nothing that touches the
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
pub use handle::Barrier;

/// A boxed wait for a barrier generation to pass.
#[cfg(all(feature = "async", not(loom)))]
type GenerationWait<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// The future of [`RawBarrier::wait_async`].
#[cfg(all(feature = "async", not(loom)))]
struct BarrierWait<'a> {
    barrier: &'a RawBarrier,
    /// Once arrived: the arrival index and the wait for the generation to pass.
    waiting: Option<(u32, GenerationWait<'a>)>,
    done: bool,
}

#[cfg(all(feature = "async", not(loom)))]
impl std::future::Future for BarrierWait<'_> {
    type Output = Result<u32, BarrierError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let b = self.barrier;
        if self.waiting.is_none() {
            match b.arrive() {
                Ok(done) => {
                    self.done = true;
                    return std::task::Poll::Ready(done);
                }
                Err((generation, index)) => {
                    let wait = crate::park::wait_async(
                        [Some(&b.parking), None],
                        crate::naps::PARKING,
                        move |_| (b.generation.load(Ordering::SeqCst) != generation).then_some(()),
                    );
                    self.waiting = Some((index, Box::pin(wait)));
                }
            }
        }
        let Some((index, wait)) = self.waiting.as_mut() else {
            return std::task::Poll::Pending;
        };
        let index = *index;
        match wait.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                self.done = true;
                std::task::Poll::Ready(b.passed(index))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

#[cfg(all(feature = "async", not(loom)))]
impl Drop for BarrierWait<'_> {
    fn drop(&mut self) {
        if self.waiting.is_some() && !self.done {
            self.barrier.break_barrier();
        }
    }
}
