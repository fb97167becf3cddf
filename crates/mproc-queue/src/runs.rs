//! Runs: claiming several consecutive slots in one pass, for `put_many` / `get_many`.
//!
//! Each slot of a run is claimed exactly as [`Ring::try_claim_push`] /
//! [`Ring::try_claim_pop`] claim one (`Empty(lap) -> Writing(me)`, `Full(lap) ->
//! Reading(me)`, one CAS of its state word), so a process killed anywhere in a run leaves
//! slots naming it, which the single-slot paths skip or reclaim as usual. What a run saves
//! is the rest:
//! - the tail (or head) moves once past the whole run instead of once per slot — a peer that
//!   finds one of the run's slots claimed helps it on one position at a time, as it always
//!   does, and a jump past positions the run holds is safe because nobody else can claim them;
//! - the run's slots are published (or freed) with Release stores and one SeqCst fence before
//!   the waker's look at the waiter count, instead of one SeqCst store per slot (the fence
//!   pairs with the sleeper's fence in `Parking::prepare`, as the SeqCst stores did).
//!
//! A run stops at the first slot that is not plainly claimable (held by a live or dead peer,
//! another lap, a scribbled word): the single-slot paths, which know the rest of the
//! protocol, take it from there.

use crate::atomic::{AtomicU64, Ordering, fence};
use crate::ring::{Claimed, Ring, Slots, State, decode, encode};

/// A run of claimed slots: `len` positions from `first`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub first: u64,
    pub len: usize,
}

impl Run {
    /// The run's slots, in order.
    pub fn slots<'r, S: Slots>(
        &self,
        ring: &'r Ring<'_, S>,
    ) -> impl Iterator<Item = Claimed> + use<'r, S> {
        let first = self.first;
        (first..first + self.len as u64).map(move |pos| ring.claimed_at(pos))
    }
}

/// Moves `counter` on to `to` unless someone (helping) already moved it there or beyond.
fn advance_to(counter: &AtomicU64, to: u64) {
    let mut at = counter.load(Ordering::SeqCst);
    while at < to {
        match counter.compare_exchange(at, to, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return,
            Err(now) => at = now,
        }
    }
}

impl<S: Slots> Ring<'_, S> {
    /// The claim record of position `pos`.
    pub(crate) fn claimed_at(&self, pos: u64) -> Claimed {
        Claimed {
            idx: (pos & self.mask) as usize,
            lap: (pos >> self.shift) as u32,
            pos,
        }
    }

    /// Claims slots from position `first` on while each is plainly `from` (of its own lap),
    /// one CAS each to `to` naming `me`, up to `max` of them; how many it claimed.
    fn claim_consecutive(&self, first: u64, max: usize, from: State, to: State, me: u32) -> usize {
        let mut len = 0;
        while len < max.min(self.mask as usize + 1) {
            let c = self.claimed_at(first + len as u64);
            let word = self.slots.word(c.idx);
            let w = word.load(Ordering::Acquire);
            let (wlap, state, _) = decode(w);
            if wlap != c.lap || state != from {
                break;
            }
            let claim = encode(c.lap, to, me);
            if word
                .compare_exchange(w, claim, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                break;
            }
            len += 1;
        }
        len
    }

    /// Claims up to `max` consecutive free slots at the tail for writing. `None` if the
    /// queue is closed; a run of length 0 if the tail slot is not plainly free (full, or
    /// anything the single-slot path must look at).
    pub fn claim_push_run(&self, me: u32, max: usize) -> Option<Run> {
        let hdr = self.hdr;
        if hdr.closed.load(Ordering::SeqCst) != 0 {
            return None;
        }
        let first = hdr.tail.load(Ordering::SeqCst);
        let len = self.claim_consecutive(first, max, State::Empty, State::Writing, me);
        for c in (Run { first, len }).slots(self) {
            if c.pos & (crate::HIGH_WATER_EVERY - 1) == 0 {
                hdr.sample_depth(c.pos);
            }
        }
        if len == 0 {
            return Some(Run { first, len });
        }
        advance_to(&hdr.tail, first + len as u64);
        // As in `try_claim_push`: a close consumers may have acted on must not be followed by
        // items they will never read.
        if hdr.closed.load(Ordering::SeqCst) != 0 {
            for c in (Run { first, len }).slots(self) {
                self.slots.word(c.idx).store(
                    encode(c.lap.wrapping_add(1), State::Empty, 0),
                    Ordering::SeqCst,
                );
            }
            hdr.not_empty.wake_all();
            return None;
        }
        Some(Run { first, len })
    }

    /// Writes the run's slots: `fill(slot_bytes, i)` for its `i`th slot.
    ///
    /// `run` must be a run this ring's [`claim_push_run`](Self::claim_push_run) returned and
    /// that is not yet published (crate-internal: `Run`s come from nowhere else).
    pub fn fill_run(&self, run: &Run, mut fill: impl FnMut(&mut [u8], usize)) {
        for (i, c) in run.slots(self).enumerate() {
            // SAFETY: the run's slots are held Writing by this process (claimed above and not
            // yet published), so nobody else reads or writes their bytes.
            unsafe { self.slots.with_mut(c.idx, |b| fill(b, i)) };
        }
    }

    /// Reads the run's slots: `take(slot_bytes, i)` for its `i`th slot.
    ///
    /// `run` must be a run this ring's [`claim_pop_run`](Self::claim_pop_run) returned and
    /// that is not yet released.
    pub fn read_run(&self, run: &Run, mut take: impl FnMut(&[u8], usize)) {
        for (i, c) in run.slots(self).enumerate() {
            // SAFETY: the run's slots are held Reading by this process until released: nobody
            // writes their bytes meanwhile.
            unsafe { self.slots.with(c.idx, |b| take(b, i)) };
        }
    }

    /// Publishes a run claimed by [`claim_push_run`](Self::claim_push_run) and filled.
    pub fn publish_run(&self, run: Run) {
        for c in run.slots(self) {
            // SYNC POINT: publish; pairs with the consumer's Acquire CAS of the word.
            self.slots
                .word(c.idx)
                .store(encode(c.lap, State::Full, 0), Ordering::Release);
        }
        // SYNC POINT: the stores above before the look at the waiter count (pairs with the
        // fence in `Parking::prepare`).
        fence(Ordering::SeqCst);
        if run.len > 1 {
            self.hdr.not_empty.wake_all();
        } else {
            self.hdr.not_empty.wake_one();
        }
    }

    /// Claims up to `max` consecutive published slots at the head for reading; a run of
    /// length 0 if the head slot holds no plainly published message.
    pub fn claim_pop_run(&self, me: u32, max: usize) -> Run {
        let hdr = self.hdr;
        let first = hdr.head.load(Ordering::SeqCst);
        let len = self.claim_consecutive(first, max, State::Full, State::Reading, me);
        if len > 0 {
            advance_to(&hdr.head, first + len as u64);
        }
        Run { first, len }
    }

    /// Frees a run claimed by [`claim_pop_run`](Self::claim_pop_run) once it has been read.
    pub fn release_run(&self, run: Run) {
        for c in run.slots(self) {
            // SYNC POINT: free; pairs with the next lap's producer's Acquire.
            self.slots.word(c.idx).store(
                encode(c.lap.wrapping_add(1), State::Empty, 0),
                Ordering::Release,
            );
        }
        // SYNC POINT: as in `publish_run`.
        fence(Ordering::SeqCst);
        if run.len > 1 {
            self.hdr.not_full.wake_all();
        } else {
            self.hdr.not_full.wake_one();
        }
    }
}
