//! `PodQueue<T: Pod>`: zero-copy slots of `T`.

use std::marker::PhantomData;
use std::time::Duration;

use bytemuck::Pod;
use mproc_segment::{Kind, SegmentError, SegmentOptions, TypeTag};

use crate::layout::Layout;
use crate::loan::{PodLoan, PodReadLoan};
use crate::raw::RawQueue;
use crate::wait::Wait;
use crate::{GetError, PutError};

/// A bounded multi-producer multi-consumer queue of plain-old-data values in shared memory:
/// each slot holds one `T`, copied in by `put` and out by `get` (no encoding).
///
/// Lock-free: `put` and `get` are a compare-and-swap, a copy and a store; no system call
/// unless someone has to sleep or be woken. Capacity is rounded up to a power of two.
///
/// ```
/// use mproc_queue::{GetError, PodQueue};
/// let q: PodQueue<u64> = PodQueue::new(4)?;     // anonymous: children get it through fork
/// q.put(7).unwrap();
/// q.try_put(8).unwrap();
/// assert_eq!(q.len(), 2);
/// assert_eq!(q.get(), Ok(7));
/// assert_eq!(q.try_get(), Ok(8));
/// assert_eq!(q.try_get(), Err(GetError::Empty));
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct PodQueue<T> {
    raw: RawQueue,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> PodQueue<T> {
    fn options(tag: TypeTag) -> SegmentOptions {
        SegmentOptions::new(Kind::QUEUE).type_tag(tag)
    }

    fn layout(capacity: usize) -> Result<Layout, SegmentError> {
        Layout::new(
            capacity,
            std::mem::size_of::<T>().max(1),
            std::mem::align_of::<T>(),
            0,
        )
    }

    /// A queue of at least `capacity` slots in a new anonymous segment.
    pub fn new(capacity: usize) -> Result<PodQueue<T>, SegmentError> {
        let raw = RawQueue::create(
            Self::options(TypeTag::of::<T>()),
            None,
            Self::layout(capacity)?,
        )?;
        Ok(PodQueue {
            raw,
            _t: PhantomData,
        })
    }

    /// A queue of at least `capacity` slots in a new named segment, typed by
    /// [`TypeTag::of`]`::<T>()`.
    pub fn create(name: &str, capacity: usize) -> Result<PodQueue<T>, SegmentError> {
        Self::create_tagged(name, capacity, TypeTag::of::<T>())
    }

    /// As [`create`](PodQueue::create), with an explicit type tag (for processes built
    /// separately, see [`TypeTag::named`]).
    pub fn create_tagged(
        name: &str,
        capacity: usize,
        tag: TypeTag,
    ) -> Result<PodQueue<T>, SegmentError> {
        let raw = RawQueue::create(Self::options(tag), Some(name), Self::layout(capacity)?)?;
        Ok(PodQueue {
            raw,
            _t: PhantomData,
        })
    }

    /// Opens a queue created by another process; its element type must be `T`.
    pub fn open(name: &str) -> Result<PodQueue<T>, SegmentError> {
        Self::open_tagged(name, TypeTag::of::<T>())
    }

    /// Opens a queue created with [`create_tagged`](PodQueue::create_tagged).
    pub fn open_tagged(name: &str, tag: TypeTag) -> Result<PodQueue<T>, SegmentError> {
        let raw = RawQueue::open(Self::options(tag), name)?;
        if raw.slot_size() != std::mem::size_of::<T>().max(1) {
            return Err(SegmentError::CorruptHeader {
                reason: "queue slot size differs from the element size",
            });
        }
        Ok(PodQueue {
            raw,
            _t: PhantomData,
        })
    }

    fn fill(value: &T) -> impl FnMut(&mut [u8], u64) + '_ {
        move |slot, _| slot[..std::mem::size_of::<T>()].copy_from_slice(bytemuck::bytes_of(value))
    }

    fn take(slot: &[u8], _pos: u64) -> T {
        bytemuck::pod_read_unaligned(&slot[..std::mem::size_of::<T>()])
    }

    fn put_with(&self, value: T, wait: Wait) -> Result<(), PutError<T>> {
        wait.push(&self.raw, Self::fill(&value))
            .map_err(|e| e.with(value, 0))
    }

    fn get_with(&self, wait: Wait) -> Result<T, GetError> {
        wait.pop(&self.raw, Self::take)
    }

    /// Appends every value of `values` in order, waiting for room as needed. On `Closed`,
    /// returns how many were put before.
    ///
    /// Values go in runs: as many consecutive free slots as there are claimed in one pass,
    /// filled, and published together (one move of the tail and one wake-up per run).
    pub fn put_many(&self, values: &[T]) -> Result<(), (usize, PutError<T>)> {
        let ring = self.raw.ring();
        let me = mproc_segment::liveness::me();
        let mut done = 0;
        while let Some(rest) = values.get(done..).filter(|r| !r.is_empty()) {
            match ring.claim_push_run(me, rest.len()) {
                None => return Err((done, PutError::Closed(rest[0]))),
                Some(run) if run.len > 0 => {
                    ring.fill_run(&run, |slot, i| Self::fill(&rest[i])(slot, 0));
                    done += run.len;
                    ring.publish_run(run);
                }
                // Full, or a slot the one-value path must look at: it waits and sees to it.
                Some(_) => {
                    self.put(rest[0]).map_err(|e| (done, e))?;
                    done += 1;
                }
            }
        }
        Ok(())
    }

    /// Waits for at least one value, then takes up to `max` without waiting further,
    /// appending them to `out`. Returns how many were taken.
    ///
    /// Values come out in runs: as many consecutive published slots as there are claimed in
    /// one pass, read, and freed together.
    pub fn get_many(&self, out: &mut Vec<T>, max: usize) -> Result<usize, GetError> {
        if max == 0 {
            return Ok(0);
        }
        out.push(self.get()?);
        let ring = self.raw.ring();
        let me = mproc_segment::liveness::me();
        let mut n = 1;
        while n < max {
            let run = ring.claim_pop_run(me, max - n);
            if run.len == 0 {
                // Nothing plainly published: one look by the one-value path, which also
                // skips or reclaims dead peers' slots.
                match self.try_get() {
                    Ok(v) => {
                        out.push(v);
                        n += 1;
                        continue;
                    }
                    Err(e @ GetError::Unreadable { .. }) => return Err(e),
                    Err(_) => break,
                }
            }
            ring.read_run(&run, |slot, _| out.push(Self::take(slot, 0)));
            n += run.len;
            ring.release_run(run);
        }
        Ok(n)
    }

    fn loan_with(&self, wait: Wait) -> Result<PodLoan<'_, T>, PutError<()>> {
        match wait.claim_push(&self.raw) {
            Ok(c) => Ok(PodLoan::new(&self.raw, c)),
            Err(e) => Err(e.with((), 0)),
        }
    }

    /// Claims the next slot to write a value in place, waiting for room:
    /// [`PodLoan::send`] publishes it, dropping the loan gives the slot up. While the loan is
    /// held, consumers that reach its slot wait for it: fill it and send it promptly.
    ///
    /// ```
    /// use mproc_queue::PodQueue;
    /// let q: PodQueue<[u64; 512]> = PodQueue::new(4)?;
    /// let mut slot = q.loan().unwrap();
    /// slot.fill(3);                      // written straight into shared memory
    /// slot.send();
    /// assert_eq!(q.get_loan().unwrap()[511], 3);  // read straight from it
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    pub fn loan(&self) -> Result<PodLoan<'_, T>, PutError<()>> {
        self.loan_with(Wait::Forever)
    }

    /// As [`loan`](Self::loan) if a slot is free now: `Err(Full)` otherwise.
    pub fn try_loan(&self) -> Result<PodLoan<'_, T>, PutError<()>> {
        self.loan_with(Wait::No)
    }

    /// As [`loan`](Self::loan), waiting at most `timeout`.
    pub fn loan_timeout(&self, timeout: Duration) -> Result<PodLoan<'_, T>, PutError<()>> {
        self.loan_with(Wait::after(timeout))
    }

    fn get_loan_with(&self, wait: Wait) -> Result<PodReadLoan<'_, T>, GetError> {
        Ok(PodReadLoan::new(&self.raw, wait.claim_pop(&self.raw)?))
    }

    /// Takes the oldest value as a guard over its slot (no copy), waiting while the queue is
    /// empty; dropping the guard frees the slot.
    pub fn get_loan(&self) -> Result<PodReadLoan<'_, T>, GetError> {
        self.get_loan_with(Wait::Forever)
    }

    /// As [`get_loan`](Self::get_loan) if a value is there now: `Err(Empty)` otherwise.
    pub fn try_get_loan(&self) -> Result<PodReadLoan<'_, T>, GetError> {
        self.get_loan_with(Wait::No)
    }

    /// As [`get_loan`](Self::get_loan), waiting at most `timeout`.
    pub fn get_loan_timeout(&self, timeout: Duration) -> Result<PodReadLoan<'_, T>, GetError> {
        self.get_loan_with(Wait::after(timeout))
    }

    /// Claims the next slot without blocking a thread, waiting for room: the async form of
    /// [`loan`](Self::loan). Cancellation-safe: a future dropped before it completes holds
    /// no slot.
    #[cfg(feature = "async")]
    pub fn loan_async(
        &self,
    ) -> impl std::future::Future<Output = Result<PodLoan<'_, T>, PutError<()>>> + '_ {
        let parkings = self.raw.put_parkings();
        mproc_sync::__private::wait_async(parkings, crate::wait::REPOLL, move |check| {
            match self.loan_with(Wait::poll(check)) {
                Err(PutError::Full(())) => None,
                r => Some(r),
            }
        })
    }

    /// Takes the oldest value as a guard over its slot without blocking a thread: the async
    /// form of [`get_loan`](Self::get_loan). Cancellation-safe: a future dropped before it
    /// completes has taken nothing.
    #[cfg(feature = "async")]
    pub fn get_loan_async(
        &self,
    ) -> impl std::future::Future<Output = Result<PodReadLoan<'_, T>, GetError>> + '_ {
        let parkings = self.raw.get_parkings();
        mproc_sync::__private::wait_async(parkings, crate::wait::REPOLL, move |check| {
            match self.get_loan_with(Wait::poll(check)) {
                Err(GetError::Empty) => None,
                r => Some(r),
            }
        })
    }

    wait_forms!(T);
    queue_state_methods!();

    #[cfg(feature = "async")]
    crate::wait_async::async_queue_methods!(T, raw);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::atomic::Ordering;
    use crate::ring::Slots;

    /// A same-user peer scribbles impossible laps over a published slot (at the head) and
    /// over the next free one (at the tail): the message there is lost, counted, and the
    /// queue goes on — at a blocked call's look after peers, however short its timeout.
    #[test]
    fn forked_peer_scribbling_slot_words_cannot_wedge_the_ring() {
        let q = PodQueue::<u64>::new(4).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        let ring = q.raw.ring();
        mproc_testkit::fork_child(|| {
            // Slot 0 holds item 1 (head); slot 2 is the tail's next free slot.
            for idx in [0, 2] {
                ring.slots
                    .word(idx)
                    .store(0x7777_0000_0000_0000 | 2 << 30, Ordering::Relaxed);
            }
            0
        })
        .assert_success();
        // Item 1's slot is skipped; item 2 comes through.
        assert_eq!(q.get_timeout(Duration::from_millis(20)), Ok(2));
        // The scribbled tail slot is freed for producers.
        for i in 0..4 {
            assert!(
                q.put_timeout(10 + i, Duration::from_millis(20)).is_ok(),
                "put {i}"
            );
        }
        for i in 0..4 {
            assert_eq!(q.get_timeout(Duration::from_millis(20)), Ok(10 + i));
        }
        assert_eq!(q.stats().corrupt_slots, 2);
    }
}
