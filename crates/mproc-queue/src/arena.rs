//! The body arena: shared memory for messages that do not fit a ring slot, allocated without
//! a system call and reclaimed from dead processes by the same liveness rule as ring slots.
//!
//! # Why a byte log
//! Two designs were weighed. Size-class free lists need a lock-free free list in shared
//! memory: a process killed between unlinking a chunk and recording itself as its owner
//! leaks the chunk, and finding such chunks needs a scan of every list. A **byte log in
//! put order** needs one claim per message whatever its size (a block bitmap would need one
//! atomic per block: thousands for a megabyte), frees in roughly the order messages are
//! taken (a queue's order), and keeps owner words exactly like the ring's slots. Its cost: a
//! chunk held for a long time (a slow consumer, a loan kept around) stops the reuse of the
//! space behind it until it is freed, as a slow reader holds up a ring. We chose the log.
//!
//! # Layout
//! The arena is `units` (a power of two, at most [`MAX_UNITS`]) units of `unit` bytes (a
//! power of two, at least 128). Unit `u` has an *entry* of two words: its chunk word and its
//! link word. Positions are unit counts since the queue was created and only grow; position
//! `p` lives in unit `p % units` and belongs to lap `p / units`. Two counters in
//! [`ArenaHeader`]: `head` (the next position to allocate) and `tail` (every position below
//! it is free). `head - tail <= units` always.
//!
//! A chunk is a run of units starting at some position; only its first unit's word is used.
//! A chunk never wraps around the end of the arena: an allocation that would is preceded by a
//! free *padding* chunk up to the end of the lap. When the arena is empty, or when the head is
//! far into its lap compared with what is live (four times it, and at least 64 units), the
//! next allocation pads to the end of the lap too, so a queue whose consumers keep up cycles
//! through its first units (warm in cache, already mapped, and untouched pages stay
//! unreserved and unallocated).
//!
//! # The chunk word
//! `state (3 bits) | lap tag (15) | peer (22) | length - 1 (24)`, where the lap tag is the
//! chunk position's lap (truncated). States:
//! - *Writing(peer)*: claimed by the producer whose peer token ([`mproc_segment::liveness`])
//!   is `peer`, which fills the body.
//! - *Linked*: the producer has put the chunk's reference in the ring slot at the ring
//!   position stored in the link word (written before the word turns Linked). The chunk now
//!   belongs to that slot: the consumer that takes the slot frees it.
//! - *Free*: freed (or padding), waiting for `tail` to pass it.
//!
//! # Allocation (a claim with helping, as the ring's)
//! At `h = head`, a producer reads the word of unit `h % units`, then checks that `head` is
//! still `h` (so the word cannot belong to a later lap). A word carrying `h`'s lap tag means
//! someone claimed `h`: help by moving `head` to `h + length`. Any other word is stale (an
//! earlier lap), and if `h + need <= tail + units` the producer claims `h` with a CAS of that
//! exact word to Writing(me), then moves `head` on (anyone who sees the claim helps). Because
//! the claim and the claimer's token are one atomic write, a producer killed at any instruction
//! leaves either nothing or a chunk naming it.
//!
//! # Freeing and reclaiming
//! Only the chunk at `tail` ever matters: anyone moves `tail` over Free chunks. A blocked
//! producer that has waited a re-poll interval also checks the tail chunk's owner:
//! - Writing(dead): the producer died before its `put` returned `Ok`: freed.
//! - Linked, but the ring slot at the link position no longer holds the message (its
//!   producer died before publishing, so consumers skipped it; or its consumer died while
//!   reading it): freed. A slot still Full, or Writing/Reading by a live process, keeps it.
//!
//! # Memory ordering (SYNC POINTs)
//! - Body: the producer's writes, then Writing -> Linked (SeqCst CAS, after the link word's
//!   store), then the ring's Full store; the consumer's Acquire of the slot and of the chunk
//!   word make the body visible.
//! - Reuse: the consumer's reads of the body, then Linked -> Free (SeqCst); the tail mover's
//!   Acquire load of that word, then its SeqCst CAS of `tail`; the next producer's SeqCst load
//!   of `tail` before it claims and writes the space.
//! - Waiting: producers out of space sleep on `space` (see `mproc_sync::Parking`); whoever
//!   moves `tail` wakes them.

use crate::atomic::{AtomicU64, Ordering};
use mproc_sync::Parking;

/// The fewest units into a lap at which an allocation starts the next lap early, and how
/// many times what is live it must be (see `try_alloc`). The loom models' arenas have four
/// units: there, any position past what is live starts the next lap, so that the models
/// go through early wraps too.
const EARLY_WRAP: u64 = if cfg!(loom) { 1 } else { 64 };
const EARLY_FACTOR: u64 = if cfg!(loom) { 1 } else { 4 };

/// The most units an arena has (the chunk word's length field).
pub(crate) const MAX_UNITS: u64 = 1 << LEN_BITS;
/// The smallest unit (bytes).
pub(crate) const MIN_UNIT: u64 = 128;
/// The fewest units an arena has.
pub(crate) const MIN_UNITS: u64 = 16;

const LEN_BITS: u32 = 24;
const PID_SHIFT: u32 = 24;
const PID_MASK: u64 = (1 << 22) - 1;
const TAG_SHIFT: u32 = 46;
const TAG_MASK: u64 = (1 << 15) - 1;
const STATE_SHIFT: u32 = 61;

const S_NONE: u64 = 0;
const S_WRITING: u64 = 1;
const S_LINKED: u64 = 2;
const S_FREE: u64 = 3;

/// Positions never get near this honestly (2^62 units); a larger one is corruption, refused
/// before any arithmetic on it could overflow.
const MAX_POS: u64 = 1 << 62;

/// Attempts one call makes before giving up (a live arena never gets near this; a corrupted
/// one must not make a call spin forever).
const MAX_RETRIES: u32 = 1 << 16;

/// A freer's "change the chunk word or `tail`, then read `head`" against an allocator's
/// "move `head`, then read `tail` and the tail chunk's word" is a store-buffer (Dekker)
/// pattern: at least one side must see the other's write, or a Free chunk (a pad) is left at
/// the tail with nobody to pass it. All those accesses are SeqCst RMWs and loads, which the
/// memory model puts in one total order, so real builds need nothing here. Loom models SeqCst
/// accesses only as acquire/release, so under loom the same ordering is an explicit fence (as
/// in `mproc_sync::Parking`).
#[inline]
fn dekker_fence() {
    #[cfg(loom)]
    crate::atomic::fence(Ordering::SeqCst);
}

/// The state of a chunk, decoded from its word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Never claimed (a zero word).
    None,
    /// Claimed by a producer that fills the body.
    Writing { pid: u32 },
    /// Referenced by the ring slot at the position in the link word.
    Linked,
    /// Freed or padding.
    Free,
    /// A state no honest process writes.
    Invalid,
}

/// A decoded chunk word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub state: Chunk,
    pub tag: u64,
    pub len: u64,
}

#[inline]
fn encode(state: Chunk, lap: u64, len: u64) -> u64 {
    let (s, pid) = match state {
        Chunk::None => (S_NONE, 0),
        Chunk::Writing { pid } => (S_WRITING, u64::from(pid) & PID_MASK),
        Chunk::Linked => (S_LINKED, 0),
        Chunk::Free | Chunk::Invalid => (S_FREE, 0),
    };
    (s << STATE_SHIFT)
        | ((lap & TAG_MASK) << TAG_SHIFT)
        | (pid << PID_SHIFT)
        | (len.wrapping_sub(1) & (MAX_UNITS - 1))
}

#[inline]
pub(crate) fn decode(w: u64) -> Word {
    let state = match w >> STATE_SHIFT {
        S_NONE => Chunk::None,
        S_WRITING => Chunk::Writing {
            pid: ((w >> PID_SHIFT) & PID_MASK) as u32,
        },
        S_LINKED => Chunk::Linked,
        S_FREE => Chunk::Free,
        _ => Chunk::Invalid,
    };
    Word {
        state,
        tag: (w >> TAG_SHIFT) & TAG_MASK,
        len: (w & (MAX_UNITS - 1)) + 1,
    }
}

/// The arena's shared counters, `#[repr(C)]`, 384 bytes: `head` and `tail` on lines of their
/// own (producers move `head`, consumers `tail`), then `space`, where producers that found no
/// room sleep. All zero is an empty arena.
#[repr(C, align(128))]
#[derive(Debug, Default)]
pub struct ArenaHeader {
    pub(crate) head: AtomicU64,
    _pad0: [u64; 15],
    pub(crate) tail: AtomicU64,
    _pad1: [u64; 15],
    pub(crate) space: Parking,
    /// Units the tail was moved over because the chunk word there failed validation (a
    /// scribbled length, state or lap tag): the message in them is lost, the arena is not.
    pub(crate) corrupt_skipped: AtomicU64,
    /// How much of the body area is reserved in the shared-memory filesystem: 0 means all of
    /// it (an anonymous queue, or one made before this word existed); otherwise
    /// [`RESERVED_LAZY`] | the bytes reserved from the body area's start, which producers
    /// extend (`fallocate`, then `fetch_max`) before they touch a chunk past it.
    pub(crate) reserved: AtomicU64,
    _pad2: [u64; 13],
}

/// The flag of a lazily reserved body area in [`ArenaHeader::reserved`].
pub(crate) const RESERVED_LAZY: u64 = 1 << 63;

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<ArenaHeader>() == 384);

/// Where the arena's entries live, and how to judge owners.
pub(crate) trait Entries {
    /// The chunk word of unit `unit` (< units).
    fn word(&self, unit: usize) -> &AtomicU64;
    /// The link word of unit `unit`.
    fn link(&self, unit: usize) -> &AtomicU64;
    /// Whether the process with peer token `pid` is alive.
    fn is_alive(&self, pid: u32) -> bool;
    /// Whether the ring slot of ring position `pos` still holds its message (published, or
    /// being written or read by a live process).
    fn ring_holds(&self, pos: u64) -> bool;
}

/// Outcome of an allocation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alloc {
    /// The chunk at this position is ours (Writing(me)).
    Done(u64),
    /// Not enough free space now.
    NoSpace,
}

/// An arena: its counters, its entries, its geometry (copied and validated once).
pub(crate) struct Arena<'a, E> {
    pub hdr: &'a ArenaHeader,
    pub entries: E,
    /// Number of units (a power of two).
    pub units: u64,
    /// log2(units).
    pub shift: u32,
}

impl<E: Entries> Arena<'_, E> {
    #[inline]
    fn lap(&self, pos: u64) -> u64 {
        pos >> self.shift
    }

    /// The unit that position `pos` lives in.
    #[inline]
    pub fn unit(&self, pos: u64) -> usize {
        (pos & (self.units - 1)) as usize
    }

    /// Claims a chunk of `len` units (1..=units) for process `me`.
    pub fn try_alloc(&self, me: u32, len: u64) -> Alloc {
        if len == 0 || len > self.units {
            return Alloc::NoSpace;
        }
        let hdr = self.hdr;
        for _ in 0..MAX_RETRIES {
            let h = hdr.head.load(Ordering::SeqCst);
            let t = hdr.tail.load(Ordering::SeqCst);
            if t > h {
                continue; // `h` is stale: others allocated and freed since.
            }
            if h > MAX_POS || h - t > self.units {
                return Alloc::NoSpace; // contradictory counters: a corrupted arena
            }
            let u = self.unit(h);
            let word = self.entries.word(u);
            let w = word.load(Ordering::Acquire);
            // The word was read while `head` was `h`: it cannot be a later lap's claim.
            if hdr.head.load(Ordering::SeqCst) != h {
                continue;
            }
            let d = decode(w);
            let lap = self.lap(h);
            if d.state != Chunk::None && d.tag == lap & TAG_MASK {
                // Someone claimed `h`: help move `head` past it once it fits (an honest claim
                // fitted the tail its claimer saw, which `tail` has only passed since).
                if (u as u64) + d.len <= self.units && h + d.len <= t + self.units {
                    let _ = hdr.head.compare_exchange(
                        h,
                        h + d.len,
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    );
                }
                continue;
            }
            let room = self.units - u as u64;
            // Pad to the end of the lap when the chunk would wrap, or when the arena is empty
            // (start again at unit 0), or when this lap's position is far past what is live
            // (four times it and the chunk, and at least `EARLY_WRAP` units): the log then
            // cycles through memory a few times the size of what it holds, warm in cache and
            // already mapped and reserved, rather than through the whole arena.
            let early = u as u64 >= EARLY_WRAP && u as u64 >= EARLY_FACTOR * (h - t + len);
            let pad = len > room || (u != 0 && (h == t || early));
            let need = if pad { room } else { len };
            if h + need > t + self.units {
                return Alloc::NoSpace;
            }
            let new = if pad {
                encode(Chunk::Free, lap, need)
            } else {
                encode(Chunk::Writing { pid: me }, lap, len)
            };
            if word
                .compare_exchange(w, new, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            let _ = hdr
                .head
                .compare_exchange(h, h + need, Ordering::SeqCst, Ordering::Relaxed);
            if !pad {
                return Alloc::Done(h);
            }
            // The pad may be at the tail already (the tail caught up while we claimed it):
            // pass it now, or the space behind it would look taken with nobody to free it.
            self.advance_tail(false);
        }
        Alloc::NoSpace
    }

    /// Hands chunk `pos` (Writing(me)) to the ring slot of ring position `ring_pos`, which
    /// `me` holds in state Writing. False if the chunk is not ours (a peer rewrote it).
    pub fn link(&self, pos: u64, me: u32, ring_pos: u64) -> bool {
        let u = self.unit(pos);
        let word = self.entries.word(u);
        let w = word.load(Ordering::Acquire);
        let d = decode(w);
        if d.state
            != (Chunk::Writing {
                pid: me & PID_MASK as u32,
            })
            || d.tag != self.lap(pos) & TAG_MASK
        {
            return false;
        }
        // SYNC POINT: the link before the state that makes it meaningful (reclaimers read the
        // link only after seeing Linked with Acquire).
        self.entries.link(u).store(ring_pos, Ordering::SeqCst);
        let linked = encode(Chunk::Linked, self.lap(pos), d.len);
        word.compare_exchange(w, linked, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// The chunk word of `pos` if it is a Linked chunk of at least `min_len` units referenced
    /// by ring position `ring_pos` and lying inside the arena; `None` otherwise.
    pub fn linked(&self, pos: u64, min_len: u64, ring_pos: u64) -> Option<u64> {
        let u = self.unit(pos);
        let w = self.entries.word(u).load(Ordering::Acquire);
        let d = decode(w);
        let ok = d.state == Chunk::Linked
            && d.tag == self.lap(pos) & TAG_MASK
            && d.len >= min_len
            && (u as u64) + d.len <= self.units
            && self.entries.link(u).load(Ordering::Acquire) == ring_pos;
        ok.then_some(w)
    }

    /// The chunk word of `pos` if it is Writing(me) and lies inside the arena.
    pub fn writing(&self, pos: u64, me: u32) -> Option<u64> {
        let u = self.unit(pos);
        let w = self.entries.word(u).load(Ordering::Acquire);
        let d = decode(w);
        let ok = d.state
            == (Chunk::Writing {
                pid: me & PID_MASK as u32,
            })
            && d.tag == self.lap(pos) & TAG_MASK
            && (u as u64) + d.len <= self.units;
        ok.then_some(w)
    }

    /// Frees chunk `pos` whose word was `w` (Writing(me) or Linked and held through its ring
    /// slot), then moves `tail` on if it can. False if the word had changed (a peer's doing).
    pub fn free(&self, pos: u64, w: u64) -> bool {
        let d = decode(w);
        let freed = encode(Chunk::Free, self.lap(pos), d.len);
        // SYNC POINT: every read of the body happened before; pairs with the tail mover's
        // Acquire load of the word.
        let ok = self
            .entries
            .word(self.unit(pos))
            .compare_exchange(w, freed, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok();
        self.advance_tail(false);
        ok
    }

    /// Moves `tail` over Free chunks; with `check_peers`, also frees the tail chunk if its
    /// owner died or its ring slot let go of it. Wakes producers waiting for space if `tail`
    /// moved. Returns whether it moved.
    pub fn advance_tail(&self, check_peers: bool) -> bool {
        let hdr = self.hdr;
        let mut moved = false;
        for _ in 0..MAX_RETRIES {
            dekker_fence();
            let t = hdr.tail.load(Ordering::SeqCst);
            let h = hdr.head.load(Ordering::SeqCst);
            if t >= h || h > MAX_POS || h - t > self.units {
                break;
            }
            let u = self.unit(t);
            let word = self.entries.word(u);
            let w = word.load(Ordering::Acquire);
            let d = decode(w);
            if d.tag != self.lap(t) & TAG_MASK
                || d.state == Chunk::None
                || (u as u64) + d.len > self.units
            {
                if hdr.tail.load(Ordering::SeqCst) != t {
                    continue; // our view was stale
                }
                // Only a corrupted arena gets here: the chunk at `tail` was claimed (head is
                // past it) but its word no longer says how long it is. Corrupt is not
                // forever: a caller that asks after peers sets its first unit aside, and
                // the units behind it are looked at one by one (a stale word from an earlier
                // lap is set aside the same way) until a valid chunk or `head`. The message
                // that was there is lost; later traffic flows.
                if !check_peers {
                    break;
                }
                if hdr
                    .tail
                    .compare_exchange(t, t + 1, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
                {
                    hdr.corrupt_skipped.fetch_add(1, Ordering::Relaxed);
                    moved = true;
                }
                continue;
            }
            let free = match d.state {
                Chunk::Free => true,
                Chunk::Writing { pid } if check_peers && !self.entries.is_alive(pid) => {
                    self.reclaim(word, w, t, d.len)
                }
                Chunk::Linked if check_peers => {
                    let ring_pos = self.entries.link(u).load(Ordering::Acquire);
                    if self.entries.ring_holds(ring_pos) {
                        break;
                    }
                    self.reclaim(word, w, t, d.len)
                }
                Chunk::Invalid if check_peers => self.reclaim(word, w, t, d.len),
                _ => break,
            };
            if !free {
                continue; // the word changed under us: look again
            }
            // A passed chunk's word stays as it is (Free): claimers take any word that is
            // not a claim for their own lap. (If its 15-bit lap tag comes round again before
            // another chunk starts at that unit, a claimer takes it for a Free chunk of this
            // lap and passes over it: a lap's worth of that space is skipped, nothing more.)
            if hdr
                .tail
                .compare_exchange(t, t + d.len, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                moved = true;
            }
        }
        if moved {
            hdr.space.wake_all();
        }
        moved
    }

    /// Frees the chunk at `t` whose word is `w`; false if `w` changed meanwhile.
    fn reclaim(&self, word: &AtomicU64, w: u64, t: u64, len: u64) -> bool {
        let freed = encode(Chunk::Free, self.lap(t), len);
        word.compare_exchange(w, freed, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
    }

    /// Units in use (head − tail, capped at the arena size), for tools.
    pub fn used(&self) -> u64 {
        let t = self.hdr.tail.load(Ordering::SeqCst);
        let h = self.hdr.head.load(Ordering::SeqCst);
        h.saturating_sub(t).min(self.units)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for (state, lap, len) in [
            (Chunk::Writing { pid: 4_194_303 }, 7, 1),
            (Chunk::Linked, 1 << 20, MAX_UNITS),
            (Chunk::Free, 0, 3),
        ] {
            let d = decode(encode(state, lap, len));
            assert_eq!(d.state, state);
            assert_eq!(d.tag, lap & TAG_MASK);
            assert_eq!(d.len, len);
        }
        assert_eq!(decode(0).state, Chunk::None);
        assert_eq!(decode(u64::MAX).state, Chunk::Invalid);
    }
}
