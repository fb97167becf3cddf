//! The ring: a bounded multi-producer multi-consumer queue of fixed-size byte slots, after
//! Dmitry Vyukov's bounded MPMC queue, made crash-aware.
//!
//! # Slots
//! Each slot has one 64-bit state word: `lap << 32 | state << 30 | peer`, where `lap` is the
//! position divided by the capacity (truncated to 32 bits), `state` is one of
//! Empty / Writing / Full / Reading, and `peer` is the peer token
//! ([`mproc_segment::liveness`]) of the process that claimed the slot (Writing/Reading). Position `pos` lives in slot `pos % capacity` and is meant for lap
//! `pos / capacity`. A zero-filled ring is a valid empty ring (every slot Empty at lap 0).
//!
//! - A producer at position `pos` (the tail) claims the slot by a CAS
//!   `Empty(lap) -> Writing(lap, me)`, *then* advances the tail (anyone who sees the slot
//!   claimed helps advance it), copies the message in, and publishes `Full(lap)`.
//! - A consumer at `pos` (the head) claims `Full(lap) -> Reading(lap, me)`, advances the head
//!   (again with helping), copies the message out and frees the slot as `Empty(lap + 1)`.
//!
//! Because the claim and the claimer's token are one atomic write, a process killed at any
//! instruction leaves either an unclaimed slot or a slot naming it:
//! - `Writing(lap, dead)`: the producer died before publishing; its `put` never returned `Ok`.
//!   Consumers skip the slot (mark it `Empty(lap + 1)`).
//! - `Reading(lap, dead)`: the consumer died while copying out; its item is lost with it (it
//!   had been taken). Producers reclaim the slot (`Empty(lap + 1)`).
//!
//! A live but stopped peer (SIGSTOP) holds up the queue at its slot until it continues.
//! Whether a claimer is alive is asked of the kernel through its token, in any pid namespace
//! (see `mproc_segment::liveness`); a dead claimer's token drawn again by a new process
//! (odds 2^-22) makes the slot wait for that process to exit too.
//!
//! # Memory ordering (SYNC POINTs)
//! - Publish: the producer's data copy, then `Full` stored SeqCst (Release would do for the
//!   data; SeqCst also orders it before the waker's read of the consumer waiter count, see
//!   `mproc_sync::Parking`). Pairs with the consumer's Acquire load/CAS of the slot word.
//! - Free: the consumer's copy out, then `Empty(lap+1)` stored SeqCst; pairs with the next
//!   lap producer's Acquire load/CAS, so it cannot overwrite data still being read.
//! - Close: `closed` stored SeqCst; producers re-check it after claiming (see `try_push`).

use crate::atomic::{AtomicU32, AtomicU64, Ordering};
use mproc_sync::Parking;

pub use crate::stats::RingSnapshot;

const STATE_SHIFT: u32 = 30;

/// Attempts one `try_push` / `try_pop` makes before giving up. Each failed attempt means
/// another process moved the ring on (so a live ring never gets near this), or the ring's
/// words contradict each other: a corrupted or hostile segment must not make a non-blocking
/// call spin forever.
const MAX_RETRIES: u32 = 1 << 16;
const PID_MASK: u64 = (1 << STATE_SHIFT) - 1;

/// The state of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Empty,
    Writing,
    Full,
    Reading,
}

#[inline]
pub(crate) fn encode(lap: u32, state: State, pid: u32) -> u64 {
    let s = match state {
        State::Empty => 0u64,
        State::Writing => 1,
        State::Full => 2,
        State::Reading => 3,
    };
    (u64::from(lap) << 32) | (s << STATE_SHIFT) | (u64::from(pid) & PID_MASK)
}

#[inline]
pub(crate) fn decode(word: u64) -> (u32, State, u32) {
    let state = match (word >> STATE_SHIFT) & 3 {
        0 => State::Empty,
        1 => State::Writing,
        2 => State::Full,
        _ => State::Reading,
    };
    ((word >> 32) as u32, state, (word & PID_MASK) as u32)
}

/// The shared control block of a ring, `#[repr(C)]`. `head` and `tail` sit on their own
/// 128-byte lines (two cache lines: adjacent-line prefetch) so producers and consumers do not
/// false-share.
///
/// Fields: `head` / `tail` (positions, only grow; advanced by CAS, with helping),
/// `closed` (0/1, SeqCst), `not_empty` (consumers sleep here; producers wake),
/// `not_full` (producers sleep here; consumers wake), `unfinished` (JoinableQueue: items put
/// and not yet `task_done`), `all_done` (joiners sleep here), `attached` (handles open on the
/// queue, shown by tools), `capacity` / `slot_size` / `arena_units` / `arena_unit` (the
/// geometry: written once at creation, copied and validated once by every opener, never read
/// again); counters for tools, each on the line of the side that writes it (see the fields).
/// Items put and taken need no counter: `tail` and `head` are exactly that, and never go
/// back.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct RingHeader {
    pub(crate) head: AtomicU64,
    _pad0: [u64; 15],
    pub(crate) tail: AtomicU64,
    _pad1: [u64; 15],
    pub(crate) closed: AtomicU32,
    pub(crate) attached: AtomicU32,
    pub(crate) capacity: AtomicU64,
    pub(crate) slot_size: AtomicU64,
    pub(crate) unfinished: AtomicU64,
    pub(crate) arena_units: AtomicU64,
    pub(crate) arena_unit: AtomicU64,
    pub(crate) not_empty: Parking,
    pub(crate) not_full: Parking,
    // Here, at byte 320, starts a 64-byte cache line that no put or get touches on its fast
    // path: the counters below are written only off the fast path, and writing them moves
    // no line that the other side is reading. (Beside `tail` they cost PodQueue 1→1 a third
    // of its speed: consumers read `tail`, so each bump there invalidated their copy.)
    pub(crate) all_done: Parking,
    /// Slots skipped because their producer died before publishing.
    pub(crate) dead_skipped: AtomicU64,
    /// Slots reclaimed because their reader died while reading.
    pub(crate) dead_reclaimed: AtomicU64,
    /// The most items seen in the ring at once: the capacity as soon as a producer finds the
    /// ring full (exact); below that, the deepest of the depths sampled by every
    /// [`HIGH_WATER_EVERY`]th put and by `stats()` readings.
    pub(crate) high_water: AtomicU64,
    /// Puts refused because the ring was full (`try_put`, or a put whose timeout ran out).
    pub(crate) full_waits: AtomicU64,
    /// Puts whose body found the arena full and had to wait (or failed).
    pub(crate) space_waits: AtomicU64,
    /// Slot words found in a state no honest process writes (a lap the ring cannot be at)
    /// and set aside: freed for producers, skipped by consumers.
    pub(crate) corrupt_slots: AtomicU64,
    /// Producers waiting for arena space now (they sleep on the arena's own parking word,
    /// not on `not_full`); added to `blocked_producers`. Like the parking counts, it may
    /// count a producer that died waiting.
    pub(crate) space_sleepers: AtomicU32,
}

/// How often (in ring positions) a producer samples the queue's depth for the high-water
/// mark: the sample reads the consumers' `head`, a cache line the put does not otherwise
/// touch. Once every 64 puts cost PodQueue 1→1 a third of its speed in an A/B run; once
/// every 4096 is lost in the noise (`mproc-bench --pod-1to1`, BENCHMARKS.md).
pub const HIGH_WATER_EVERY: u64 = 4096;

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RingHeader>() == 384);
// The counters' line: see the comment at `all_done`.
#[cfg(not(loom))]
const _: () = assert!(
    std::mem::offset_of!(RingHeader, all_done) == 320
        && std::mem::offset_of!(RingHeader, space_sleepers) + 4 <= 384
);

/// Where the slots' words and bytes live (a segment, or a loom model), and how to ask whether
/// a process is alive.
pub(crate) trait Slots {
    fn word(&self, idx: usize) -> &AtomicU64;

    /// Runs `f` on slot `idx`'s bytes for writing.
    ///
    /// # Safety
    /// The caller must hold the slot in state Writing (claimed by this process).
    unsafe fn with_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R;

    /// Runs `f` on slot `idx`'s bytes for reading.
    ///
    /// # Safety
    /// The caller must hold the slot in state Reading (claimed by this process), or own the
    /// whole ring (no other process attached).
    unsafe fn with<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R;

    fn is_alive(&self, pid: u32) -> bool;
}

/// A slot claimed at ring position `pos` (slot `idx`, lap `lap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub idx: usize,
    pub lap: u32,
    pub pos: u64,
}

/// Outcome of a claim for writing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    Slot(Claimed),
    Full,
    Closed,
}

/// Outcome of a non-blocking push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Done,
    Full,
    Closed,
}

/// Outcome of a non-blocking pop.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pop<R> {
    Item(R),
    /// Nothing claimed at the head.
    Empty,
    /// A live producer is writing the head slot.
    InProgress,
    /// Empty, and the queue was closed before we looked.
    Closed,
}

/// A ring: the control block plus its slots.
pub(crate) struct Ring<'a, S> {
    pub hdr: &'a RingHeader,
    pub slots: S,
    pub mask: u64,
    pub shift: u32,
}

impl<S: Slots> Ring<'_, S> {
    #[inline]
    fn lap(&self, pos: u64) -> u32 {
        (pos >> self.shift) as u32
    }

    #[inline]
    fn help_advance(counter: &AtomicU64, pos: u64) {
        let _ = counter.compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
    }

    /// Tries to append one message, written into the slot by `fill(bytes, position)`.
    ///
    /// With `check_peers`, a slot held by a reader is tested for the reader's death (a
    /// `fcntl` on the liveness roll); without, such a slot just counts as full. Blocking
    /// callers skip the check on their first, fast look, so the hot path stays cheap.
    pub fn try_push(
        &self,
        me: u32,
        check_peers: bool,
        mut fill: impl FnMut(&mut [u8], u64),
    ) -> Push {
        match self.try_claim_push(me, check_peers) {
            Claim::Slot(c) => {
                // SAFETY: we hold the slot in state Writing (the claim above).
                unsafe { self.slots.with_mut(c.idx, |b| fill(b, c.pos)) };
                self.publish(c);
                Push::Done
            }
            Claim::Full => Push::Full,
            Claim::Closed => Push::Closed,
        }
    }

    /// Claims the tail slot for writing (state Writing(me)); the caller fills it and then
    /// [`publish`](Self::publish)es or [`cancel`](Self::cancel)s it. Consumers reaching the
    /// slot meanwhile wait for it (a claim held long holds them up).
    pub fn try_claim_push(&self, me: u32, check_peers: bool) -> Claim {
        let hdr = self.hdr;
        for _ in 0..MAX_RETRIES {
            if hdr.closed.load(Ordering::SeqCst) != 0 {
                return Claim::Closed;
            }
            let pos = hdr.tail.load(Ordering::SeqCst);
            let idx = (pos & self.mask) as usize;
            let lap = self.lap(pos);
            let word = self.slots.word(idx);
            let w = word.load(Ordering::Acquire);
            let (wlap, state, pid) = decode(w);
            if wlap == lap && state == State::Empty {
                let claim = encode(lap, State::Writing, me);
                if word
                    .compare_exchange(w, claim, Ordering::SeqCst, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                Self::help_advance(&hdr.tail, pos);
                if pos & (HIGH_WATER_EVERY - 1) == 0 {
                    hdr.sample_depth(pos);
                }
                // A close that consumers may already have acted on ("empty and closed") must
                // not be followed by an item they will never read: re-check after claiming.
                if hdr.closed.load(Ordering::SeqCst) != 0 {
                    self.cancel(Claimed { idx, lap, pos });
                    return Claim::Closed;
                }
                return Claim::Slot(Claimed { idx, lap, pos });
            }
            if wlap == lap || (wlap == lap.wrapping_add(1) && state == State::Empty) {
                // Someone else claimed this position: help move the tail on.
                Self::help_advance(&hdr.tail, pos);
                continue;
            }
            if wlap == lap.wrapping_sub(1) {
                // The previous lap's message still occupies the slot.
                if check_peers && state == State::Reading && !self.slots.is_alive(pid) {
                    // Its reader died while copying it out: reclaim the slot.
                    let free = encode(lap, State::Empty, 0);
                    if word
                        .compare_exchange(w, free, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok()
                    {
                        hdr.dead_reclaimed.fetch_add(1, Ordering::Relaxed);
                        mproc_segment::slow_path_event!(
                            position = pos,
                            reader_peer = pid,
                            "queue slot reclaimed: its reader died while reading"
                        );
                    }
                    continue;
                }
                if hdr.tail.load(Ordering::SeqCst) == pos {
                    hdr.note_high_water(self.mask + 1);
                    return Claim::Full;
                }
                continue;
            }
            // No honest word at the tail has another lap: if the tail has not moved, a peer
            // scribbled over it. Corrupt is not forever: a caller that asks after peers frees
            // the slot for this lap (whatever it held is lost) and counts it.
            if check_peers
                && hdr.tail.load(Ordering::SeqCst) == pos
                && word
                    .compare_exchange(
                        w,
                        encode(lap, State::Empty, 0),
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                hdr.corrupt_slots.fetch_add(1, Ordering::Relaxed);
            }
            // Our view was stale; look again.
        }
        // Only a corrupted ring (or extreme contention) gets here: report "no room now"
        // rather than spin forever in a non-blocking call.
        Claim::Full
    }

    /// Publishes a slot claimed by [`try_claim_push`](Self::try_claim_push) and filled.
    pub fn publish(&self, c: Claimed) {
        // SYNC POINT: publish; pairs with the consumer's Acquire CAS of the word.
        self.slots
            .word(c.idx)
            .store(encode(c.lap, State::Full, 0), Ordering::SeqCst);
        self.hdr.not_empty.wake_one();
    }

    /// Gives up a slot claimed by [`try_claim_push`](Self::try_claim_push) without publishing
    /// it: consumers pass over it as over a taken slot.
    pub fn cancel(&self, c: Claimed) {
        self.slots.word(c.idx).store(
            encode(c.lap.wrapping_add(1), State::Empty, 0),
            Ordering::SeqCst,
        );
        self.hdr.not_empty.wake_all();
    }

    /// Tries to take one message, read out of the slot by `take(bytes, position)`.
    /// `check_peers` as in [`try_push`](Self::try_push), for a slot a producer is still
    /// writing.
    pub fn try_pop<R>(
        &self,
        me: u32,
        check_peers: bool,
        mut take: impl FnMut(&[u8], u64) -> R,
    ) -> Pop<R> {
        match self.try_claim_pop(me, check_peers) {
            Pop::Item(c) => {
                // SAFETY: we hold the slot in state Reading (the claim above).
                let r = unsafe { self.slots.with(c.idx, |b| take(b, c.pos)) };
                self.release(c);
                Pop::Item(r)
            }
            Pop::Empty => Pop::Empty,
            Pop::InProgress => Pop::InProgress,
            Pop::Closed => Pop::Closed,
        }
    }

    /// Claims the head slot for reading (state Reading(me)); the caller reads it and then
    /// [`release`](Self::release)s it. Other consumers move on past a claimed slot; producers
    /// wait for it only when they come round to it again.
    pub fn try_claim_pop(&self, me: u32, check_peers: bool) -> Pop<Claimed> {
        let hdr = self.hdr;
        for _ in 0..MAX_RETRIES {
            // SYNC POINT: read `closed` before concluding "empty" (see `try_claim_push`).
            let closed = hdr.closed.load(Ordering::SeqCst) != 0;
            let pos = hdr.head.load(Ordering::SeqCst);
            let idx = (pos & self.mask) as usize;
            let lap = self.lap(pos);
            let word = self.slots.word(idx);
            let w = word.load(Ordering::Acquire);
            let (wlap, state, pid) = decode(w);
            if wlap == lap {
                match state {
                    State::Full => {
                        let claim = encode(lap, State::Reading, me);
                        if word
                            .compare_exchange(w, claim, Ordering::SeqCst, Ordering::Relaxed)
                            .is_err()
                        {
                            continue;
                        }
                        Self::help_advance(&hdr.head, pos);
                        return Pop::Item(Claimed { idx, lap, pos });
                    }
                    State::Reading => {
                        Self::help_advance(&hdr.head, pos);
                        continue;
                    }
                    State::Writing => {
                        if !check_peers || self.slots.is_alive(pid) {
                            return Pop::InProgress;
                        }
                        // The producer died before publishing: skip its slot.
                        let skip = encode(lap.wrapping_add(1), State::Empty, 0);
                        if word
                            .compare_exchange(w, skip, Ordering::SeqCst, Ordering::Relaxed)
                            .is_ok()
                        {
                            hdr.dead_skipped.fetch_add(1, Ordering::Relaxed);
                            mproc_segment::slow_path_event!(
                                position = pos,
                                producer_peer = pid,
                                "queue slot skipped: its producer died before publishing"
                            );
                            Self::help_advance(&hdr.head, pos);
                            hdr.not_full.wake_one();
                        }
                        continue;
                    }
                    State::Empty => {
                        if hdr.tail.load(Ordering::SeqCst) <= pos {
                            return if closed { Pop::Closed } else { Pop::Empty };
                        }
                        continue;
                    }
                }
            }
            if wlap == lap.wrapping_add(1) {
                // Taken (or skipped) by someone else: help move the head on.
                Self::help_advance(&hdr.head, pos);
                continue;
            }
            if wlap == lap.wrapping_sub(1) {
                if hdr.tail.load(Ordering::SeqCst) <= pos {
                    // The slot still holds the previous lap (its reader is slow): nothing new.
                    return if closed { Pop::Closed } else { Pop::Empty };
                }
                continue;
            }
            // Another lap at the head: a scribbled word (see `try_claim_push`). A caller that
            // asks after peers skips the position (its message, if any, is lost) and counts it.
            if check_peers
                && hdr.head.load(Ordering::SeqCst) == pos
                && hdr.tail.load(Ordering::SeqCst) > pos
                && word
                    .compare_exchange(
                        w,
                        encode(lap.wrapping_add(1), State::Empty, 0),
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                hdr.corrupt_slots.fetch_add(1, Ordering::Relaxed);
                Self::help_advance(&hdr.head, pos);
                hdr.not_full.wake_one();
            }
        }
        // Only a corrupted ring (or extreme contention) gets here: see `try_claim_push`.
        Pop::InProgress
    }

    /// Frees a slot claimed by [`try_claim_pop`](Self::try_claim_pop) once it has been read.
    pub fn release(&self, c: Claimed) {
        // SYNC POINT: free the slot; pairs with the next producer's Acquire.
        self.slots.word(c.idx).store(
            encode(c.lap.wrapping_add(1), State::Empty, 0),
            Ordering::SeqCst,
        );
        self.hdr.not_full.wake_one();
    }

    /// Whether the slot of position `pos` still holds its message: published, or being
    /// written or read by a live process (for the body arena's reclaimer).
    pub fn holds(&self, pos: u64) -> bool {
        let w = self
            .slots
            .word((pos & self.mask) as usize)
            .load(Ordering::Acquire);
        let (wlap, state, pid) = decode(w);
        if wlap != self.lap(pos) {
            return false;
        }
        match state {
            State::Full => true,
            State::Writing | State::Reading => self.slots.is_alive(pid),
            State::Empty => false,
        }
    }

    /// Marks the queue closed and wakes everyone.
    pub fn close(&self) {
        self.hdr.closed.store(1, Ordering::SeqCst);
        self.hdr.not_empty.wake_all();
        self.hdr.not_full.wake_all();
    }

    /// Messages published and not yet taken, plus messages being read by a live consumer
    /// (every slot looked at once, whatever the counters say).
    #[cfg_attr(loom, allow(dead_code))]
    pub fn outstanding(&self) -> usize {
        (0..=self.mask as usize)
            .filter(|&idx| {
                let (_, state, pid) = decode(self.slots.word(idx).load(Ordering::Acquire));
                state == State::Full || (state == State::Reading && self.slots.is_alive(pid))
            })
            .count()
    }

    /// Number of messages that `get` could take now (published, not yet taken).
    #[cfg_attr(loom, allow(dead_code))]
    pub fn len(&self) -> usize {
        let head = self.hdr.head.load(Ordering::SeqCst);
        let tail = self.hdr.tail.load(Ordering::SeqCst);
        // A corrupted ring may say anything: never walk more than the slots there are.
        let end = tail.max(head).min(head.saturating_add(self.mask + 1));
        (head..end)
            .filter(|&pos| {
                let (wlap, state, _) = decode(
                    self.slots
                        .word((pos & self.mask) as usize)
                        .load(Ordering::Acquire),
                );
                wlap == self.lap(pos) && state == State::Full
            })
            .count()
    }
}
