//! What tools read of a queue: `RingSnapshot`, from the control block in process
//! (`Queue::stats`) or from a copy of its bytes (`mproc inspect`, `metrics`, `top`), and the
//! high-water mark's sampling.

use crate::atomic::Ordering;
use crate::ring::RingHeader;

/// A point-in-time reading of a ring's control block, for tools (`mproc inspect`; serialized
/// as `mproc ls --json` prints it, with `len` as `length` and `attached` as `handles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RingSnapshot {
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Items put and not yet taken (tail − head; includes items being written or read).
    #[serde(rename = "length")]
    pub len: u64,
    /// Whether the queue was closed.
    pub closed: bool,
    /// Handles open on the queue.
    #[serde(rename = "handles")]
    pub attached: u32,
    /// JoinableQueue: items put and not yet `task_done`.
    pub unfinished: u64,
    /// Bytes of the body arena (0: none).
    pub arena_bytes: u64,
    /// Items put since creation (the ring's tail: every claimed position).
    pub put_total: u64,
    /// Items taken since creation (the head).
    pub got_total: u64,
    /// Producers asleep waiting for room now, for a slot or for arena space (may count
    /// processes that died asleep).
    pub blocked_producers: u32,
    /// Consumers asleep waiting for an item now (likewise).
    pub blocked_consumers: u32,
    /// Slots skipped because their producer died before publishing.
    pub dead_skipped: u64,
    /// Slots reclaimed because their reader died while reading.
    pub dead_reclaimed: u64,
    /// The most items seen in the queue at once: the capacity once the queue ran full (exact);
    /// below that, the deepest depth sampled every [`HIGH_WATER_EVERY`](crate::HIGH_WATER_EVERY) puts or by a
    /// `stats()` call (tools that only read the segment do not sample it).
    pub high_water: u64,
    /// Puts refused because every slot was taken (`try_put`, or a timeout ran out).
    pub full_waits: u64,
    /// Puts whose body found the arena full.
    pub space_waits: u64,
    /// Slot words a peer scribbled over (a lap the ring cannot be at), set aside so that
    /// traffic goes on; their messages, if any, are lost.
    pub corrupt_slots: u64,
}

impl RingSnapshot {
    /// Reads the counters from the bytes of a control block (a tool's `pread` of a file it
    /// does not map); `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<RingSnapshot> {
        use std::mem::offset_of;
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let head = u64_at(offset_of!(RingHeader, head))?;
        let tail = u64_at(offset_of!(RingHeader, tail))?;
        // A Parking is (seq, waiters): the waiter count is its second u32.
        let waiters = |at: usize| u32_at(at + 4);
        Some(RingSnapshot {
            capacity: u64_at(offset_of!(RingHeader, capacity))?,
            slot_size: u64_at(offset_of!(RingHeader, slot_size))?,
            len: tail.saturating_sub(head),
            closed: u32_at(offset_of!(RingHeader, closed))? != 0,
            attached: u32_at(offset_of!(RingHeader, attached))?,
            unfinished: u64_at(offset_of!(RingHeader, unfinished))?,
            arena_bytes: u64_at(offset_of!(RingHeader, arena_units))?
                .saturating_mul(u64_at(offset_of!(RingHeader, arena_unit))?),
            put_total: tail,
            got_total: head,
            blocked_producers: waiters(offset_of!(RingHeader, not_full))?
                .saturating_add(u32_at(offset_of!(RingHeader, space_sleepers))?),
            blocked_consumers: waiters(offset_of!(RingHeader, not_empty))?,
            dead_skipped: u64_at(offset_of!(RingHeader, dead_skipped))?,
            dead_reclaimed: u64_at(offset_of!(RingHeader, dead_reclaimed))?,
            high_water: u64_at(offset_of!(RingHeader, high_water))?,
            full_waits: u64_at(offset_of!(RingHeader, full_waits))?,
            space_waits: u64_at(offset_of!(RingHeader, space_waits))?,
            corrupt_slots: u64_at(offset_of!(RingHeader, corrupt_slots))?,
        })
    }
}

impl RingHeader {
    /// Raises the high-water mark to `depth` (a plain load first: once the mark is reached,
    /// nothing is written).
    pub(crate) fn note_high_water(&self, depth: u64) {
        if self.high_water.load(Ordering::Relaxed) < depth {
            self.high_water.fetch_max(depth, Ordering::Relaxed);
        }
    }

    /// A producer's depth sample at ring position `pos` (one read of the consumers' line per
    /// [`HIGH_WATER_EVERY`](crate::HIGH_WATER_EVERY) puts); out of line so the put's fast path stays as it was.
    #[cold]
    #[inline(never)]
    pub(crate) fn sample_depth(&self, pos: u64) {
        self.note_high_water(pos.saturating_sub(self.head.load(Ordering::Relaxed)));
    }

    /// Reads the control block's counters (each load is atomic; together they are a snapshot
    /// only when nobody is using the queue).
    pub fn snapshot(&self) -> RingSnapshot {
        let head = self.head.load(Ordering::SeqCst);
        let tail = self.tail.load(Ordering::SeqCst);
        // A reading in process is also a depth sample for the high-water mark.
        self.note_high_water(
            tail.saturating_sub(head)
                .min(self.capacity.load(Ordering::Relaxed)),
        );
        RingSnapshot {
            capacity: self.capacity.load(Ordering::Relaxed),
            slot_size: self.slot_size.load(Ordering::Relaxed),
            len: tail.saturating_sub(head),
            closed: self.closed.load(Ordering::SeqCst) != 0,
            attached: self.attached.load(Ordering::SeqCst),
            unfinished: self.unfinished.load(Ordering::SeqCst),
            arena_bytes: self
                .arena_units
                .load(Ordering::Relaxed)
                .saturating_mul(self.arena_unit.load(Ordering::Relaxed)),
            put_total: tail,
            got_total: head,
            blocked_producers: self
                .not_full
                .waiters()
                .saturating_add(self.space_sleepers.load(Ordering::Relaxed)),
            blocked_consumers: self.not_empty.waiters(),
            dead_skipped: self.dead_skipped.load(Ordering::Relaxed),
            dead_reclaimed: self.dead_reclaimed.load(Ordering::Relaxed),
            high_water: self.high_water.load(Ordering::Relaxed),
            full_waits: self.full_waits.load(Ordering::Relaxed),
            space_waits: self.space_waits.load(Ordering::Relaxed),
            corrupt_slots: self.corrupt_slots.load(Ordering::Relaxed),
        }
    }
}
