//! Zero-copy loans: guards over queue memory that a producer fills in place and a consumer
//! reads in place.
//!
//! **Aliasing rules.** A loan is never visible to two processes as mutable:
//! - a send loan ([`Loan`], [`PodLoan`]) is memory this process alone owns (an arena chunk in
//!   state Writing(me), or a ring slot in state Writing(me)); nobody reads it before `send`;
//! - a receive loan ([`ReadLoan`], [`PodReadLoan`]) is memory this process holds for reading
//!   (its ring slot in state Reading(me), and the message's arena chunk, still Linked to that
//!   slot); nobody writes it until the guard is dropped.
//!
//! **Crash semantics.** A process killed while holding a send loan never sent the message:
//! the chunk (or slot) names it and is reclaimed once it is seen dead. A process killed while
//! holding a receive loan loses that one message, like a consumer killed inside `get`; its
//! slot and chunk are reclaimed.
//!
//! **Holding a loan holds up others.** A receive loan keeps its ring slot and arena chunk:
//! producers wait for that slot when they come round to it again, and the arena's space
//! behind the chunk is not reused until it is freed. A [`PodLoan`] holds the tail slot:
//! consumers reaching it wait until it is sent or dropped. Keep loans short.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

use crate::body;
use crate::body::Located;
use crate::raw::RawQueue;
use crate::ring::Claimed;
use crate::wait::{Refused, Wait};
use crate::{GetError, PutError};

/// A body being written in place in a queue's arena, from
/// [`ByteQueue::loan`](crate::ByteQueue::loan). Derefs to the `len` bytes of the message;
/// [`send`](Self::send) enqueues it without a copy. Dropped unsent, it is freed.
///
/// The bytes start out holding whatever an earlier message left there: write all of them.
///
/// ```
/// use mproc_queue::ByteQueue;
/// let q = ByteQueue::new(16)?;
/// let mut loan = q.loan(4096).unwrap();
/// loan.fill(7);                       // write in place, in shared memory
/// loan.send().unwrap();
/// let msg = q.get_loan().unwrap();    // read in place
/// assert!(msg.iter().all(|&b| b == 7) && msg.len() == 4096);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct Loan<'q> {
    raw: &'q RawQueue,
    pos: u64,
    len: usize,
    live: bool,
}

impl<'q> Loan<'q> {
    pub(crate) fn new(raw: &'q RawQueue, pos: u64, len: usize) -> Loan<'q> {
        Loan {
            raw,
            pos,
            len,
            live: true,
        }
    }

    fn send_with(mut self, wait: Wait) -> Result<(), PutError<Loan<'q>>> {
        let sent = body::link_chunk(self.raw, self.pos, self.len, wait, true);
        if matches!(sent, Ok(()) | Err(Refused::Unsendable(_))) {
            // Sent (or handed to a slot as dropped): the chunk is no longer ours to free.
            self.live = false;
        }
        sent.map_err(|e| e.with(self, 0))
    }

    /// Enqueues the message, waiting for a free slot. It fails only if the queue was closed
    /// (`Closed`; the loan is freed), so the error owns nothing and `?` works into any error
    /// type; [`try_send`](Self::try_send) and [`send_timeout`](Self::send_timeout) hand the
    /// loan back to retry.
    pub fn send(self) -> Result<(), PutError<()>> {
        self.send_with(Wait::Forever).map_err(|e| e.map(drop))
    }

    /// Enqueues the message if a slot is free now (`Full` gives the loan back).
    pub fn try_send(self) -> Result<(), PutError<Loan<'q>>> {
        self.send_with(Wait::No)
    }

    /// Enqueues the message, waiting at most `timeout` for a slot.
    pub fn send_timeout(self, timeout: std::time::Duration) -> Result<(), PutError<Loan<'q>>> {
        self.send_with(Wait::after(timeout))
    }
}

impl Deref for Loan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the chunk is ours (Writing(me)) and `len` bytes from its start lie inside
        // the arena (checked when it was allocated); nobody else touches it until it is sent.
        unsafe { std::slice::from_raw_parts(self.raw.chunk_ptr(self.pos), self.len) }
    }
}

impl DerefMut for Loan<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference in this process.
        unsafe { std::slice::from_raw_parts_mut(self.raw.chunk_ptr(self.pos), self.len) }
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if self.live {
            body::free_unsent(self.raw, self.pos);
        }
    }
}

/// A message read in place, from [`ByteQueue::get_loan`](crate::ByteQueue::get_loan) (or
/// [`Queue`](crate::Queue)-compatible bytes). Derefs to the message's bytes in shared memory;
/// dropping it frees them.
#[derive(Debug)]
pub struct ReadLoan<'q> {
    raw: &'q RawQueue,
    slot: Claimed,
    ptr: *const u8,
    len: usize,
    chunk: Option<(u64, u64)>,
}

// SAFETY: the guard refers to memory this process holds for reading (see the module docs);
// reading it from another thread of the process is as safe as from this one.
unsafe impl Send for ReadLoan<'_> {}
// SAFETY: as above; the guard only hands out shared references.
unsafe impl Sync for ReadLoan<'_> {}

impl<'q> ReadLoan<'q> {
    /// Takes the message in the slot `slot` (held Reading by us) as a guard.
    pub(crate) fn take(raw: &'q RawQueue, slot: Claimed) -> Result<ReadLoan<'q>, GetError> {
        // SAFETY: we hold the slot Reading; its bytes lie inside the payload.
        let bytes = unsafe { std::slice::from_raw_parts(raw.slot_ptr(slot.idx), raw.slot_size()) };
        match body::locate(raw, bytes, slot.pos) {
            Ok(Located::Inline(body)) => Ok(ReadLoan {
                raw,
                slot,
                ptr: body.as_ptr(),
                len: body.len(),
                chunk: None,
            }),
            Ok(Located::Chunk { pos, word, len }) => Ok(ReadLoan {
                raw,
                slot,
                ptr: raw.chunk_ptr(pos),
                len,
                chunk: Some((pos, word)),
            }),
            Err(reason) => {
                raw.ring().release(slot);
                Err(GetError::Unreadable { reason })
            }
        }
    }
}

impl Deref for ReadLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is the message's bytes, inside the slot or an arena chunk
        // that `locate` validated, held by us until drop: nobody writes them meanwhile.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ReadLoan<'_> {
    fn drop(&mut self) {
        if let (Some((pos, word)), Some(arena)) = (self.chunk, self.raw.arena()) {
            arena.free(pos, word);
        }
        self.raw.ring().release(self.slot);
    }
}

/// A `PodQueue` slot being written in place, from
/// [`PodQueue::loan`](crate::PodQueue::loan): derefs to the `T` in the slot, which holds
/// whatever an earlier message left there (any bytes are a valid `T`). [`send`](Self::send)
/// publishes it; dropped unsent, the slot is given up. While held, consumers that reach this
/// slot wait for it.
#[derive(Debug)]
pub struct PodLoan<'q, T> {
    raw: &'q RawQueue,
    slot: Claimed,
    live: bool,
    _t: PhantomData<&'q mut T>,
}

impl<'q, T: Pod> PodLoan<'q, T> {
    pub(crate) fn new(raw: &'q RawQueue, slot: Claimed) -> PodLoan<'q, T> {
        PodLoan {
            raw,
            slot,
            live: true,
            _t: PhantomData,
        }
    }

    /// Publishes the value: consumers can take it now.
    pub fn send(mut self) {
        self.live = false;
        self.raw.ring().publish(self.slot);
    }
}

impl<T: Pod> Deref for PodLoan<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is ours (Writing(me)); its bytes are `slot_size == size_of::<T>()`
        // bytes aligned to `align_of::<T>()` (slots are aligned to the element alignment,
        // checked at open), and any bytes are a valid `T: Pod`.
        unsafe { &*self.raw.slot_ptr(self.slot.idx).cast::<T>() }
    }
}

impl<T: Pod> DerefMut for PodLoan<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; nobody else reads or writes the slot until it is published.
        unsafe { &mut *self.raw.slot_ptr(self.slot.idx).cast::<T>() }
    }
}

impl<T> Drop for PodLoan<'_, T> {
    fn drop(&mut self) {
        if self.live {
            self.raw.ring().cancel(self.slot);
        }
    }
}

/// A `PodQueue` value read in place, from [`PodQueue::get_loan`](crate::PodQueue::get_loan):
/// derefs to the `T` in its slot; dropping it frees the slot.
#[derive(Debug)]
pub struct PodReadLoan<'q, T> {
    raw: &'q RawQueue,
    slot: Claimed,
    _t: PhantomData<&'q T>,
}

impl<'q, T: Pod> PodReadLoan<'q, T> {
    pub(crate) fn new(raw: &'q RawQueue, slot: Claimed) -> PodReadLoan<'q, T> {
        PodReadLoan {
            raw,
            slot,
            _t: PhantomData,
        }
    }
}

impl<T: Pod> Deref for PodReadLoan<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is held Reading by us until drop; it is `size_of::<T>()` bytes
        // aligned for `T` (checked at open), and any bytes are a valid `T: Pod`.
        unsafe { &*self.raw.slot_ptr(self.slot.idx).cast::<T>() }
    }
}

impl<T> Drop for PodReadLoan<'_, T> {
    fn drop(&mut self) {
        self.raw.ring().release(self.slot);
    }
}
