//! Where a queue's ring and body arena lie in its segment's payload, computed once from the
//! geometry and validated against the real length.
//!
//! # Payload layout
//! | offset | what |
//! |---|---|
//! | 0 | [`RingHeader`] (384 bytes, 128-aligned) |
//! | `data_offset` (384) | `capacity` slots of `stride` bytes |
//! | `arena_offset` (128-aligned) | [`ArenaHeader`] (384 bytes), if the queue has an arena |
//! | `arena_offset + 384` | `units` entries of two `u64` words (chunk word, link word) |
//! | `body_offset` | `units` units of `unit` bytes: the message bodies |
//!
//! A slot is its state word (`AtomicU64`) followed, `lead` bytes in (the element alignment,
//! at least 8), by `slot_size` bytes of message; `stride` rounds `lead + slot_size` up to
//! `lead`. Keeping the word next to its bytes means a producer and a consumer working on
//! neighbouring slots touch one cache line per message, not two.
//!
//! The geometry (capacity, slot size, arena units and unit size) is written into the
//! [`RingHeader`] once by the creator; every opener copies it once, validates it against the
//! segment header and the real mapped length, and never reads it from shared memory again.

use mproc_segment::SegmentError;

use crate::arena::{ArenaHeader, MAX_UNITS, MIN_UNIT, MIN_UNITS};

/// The most units a new arena is given (larger arenas get larger units).
const TARGET_UNITS: u64 = 1 << 16;
use crate::ring::RingHeader;

pub(crate) const HEADER_BYTES: usize = std::mem::size_of::<RingHeader>();
pub(crate) const ARENA_HEADER_BYTES: usize = std::mem::size_of::<ArenaHeader>();
/// Bytes of one arena entry (chunk word + link word).
pub(crate) const ENTRY_BYTES: usize = 16;

/// The largest unit of an arena (bytes).
const MAX_UNIT: u64 = 1 << 30;

/// The geometry of a ring (and its arena) in a payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub capacity: usize,
    pub slot_size: usize,
    /// Offset of a slot's bytes from its word.
    pub lead: usize,
    pub stride: usize,
    pub data_offset: usize,
    /// Arena units (0: no arena).
    pub units: u64,
    /// Bytes per arena unit (0: no arena).
    pub unit: u64,
    pub arena_offset: usize,
    pub body_offset: usize,
    pub payload_len: usize,
}

fn bad(reason: &'static str) -> SegmentError {
    SegmentError::InvalidSize { reason }
}

impl Layout {
    /// Capacity rounded up to a power of two; slots aligned to `align` (at least 8); an arena
    /// of `arena_bytes` rounded up to a power of two (0: none).
    pub fn new(
        capacity: usize,
        slot_size: usize,
        align: usize,
        arena_bytes: usize,
    ) -> Result<Layout, SegmentError> {
        if capacity == 0 {
            return Err(bad("queue capacity must be at least 1"));
        }
        if capacity > 1 << 31 {
            return Err(bad("queue capacity must be at most 2^31"));
        }
        let (units, unit) = if arena_bytes == 0 {
            (0, 0)
        } else {
            let total = (arena_bytes as u64)
                .checked_next_power_of_two()
                .ok_or(bad("arena size overflows"))?
                .max(MIN_UNIT * MIN_UNITS);
            // At most TARGET_UNITS units: their entries (16 bytes each) are reserved with
            // the queue, whatever the arena holds, so a 64 MiB arena keeps 1 MiB of them and
            // a 1 GiB one 1 MiB too, not 8 and 128 MiB. A chunk is whole units, so a message
            // wastes less than one unit; every message also takes a ring slot, so a queue
            // never holds more chunks than its capacity.
            let unit = (total / TARGET_UNITS).max(MIN_UNIT);
            if unit > MAX_UNIT {
                return Err(bad("arena size must be at most 2^54 bytes"));
            }
            (total / unit, unit)
        };
        Self::build(capacity.next_power_of_two(), slot_size, align, units, unit)
    }

    /// The layout of exactly this geometry (validated: it may come from shared memory).
    pub(crate) fn build(
        capacity: usize,
        slot_size: usize,
        align: usize,
        units: u64,
        unit: u64,
    ) -> Result<Layout, SegmentError> {
        if capacity == 0 || !capacity.is_power_of_two() {
            return Err(bad("queue capacity must be at least 1"));
        }
        if capacity > 1 << 31 {
            return Err(bad("queue capacity must be at most 2^31"));
        }
        if slot_size == 0 || slot_size > u32::MAX as usize {
            return Err(bad("slot size must be between 1 and 2^32 - 1 bytes"));
        }
        let no_arena = units == 0 && unit == 0;
        let arena_ok = units.is_power_of_two()
            && (MIN_UNITS..=MAX_UNITS).contains(&units)
            && unit.is_power_of_two()
            && (MIN_UNIT..=MAX_UNIT).contains(&unit);
        if !no_arena && !arena_ok {
            return Err(bad("arena geometry out of range"));
        }
        let lead = align.max(8);
        let stride = lead
            .checked_add(slot_size)
            .map(|s| s.next_multiple_of(lead))
            .ok_or(bad("queue size overflows"))?;
        let data_offset = HEADER_BYTES.next_multiple_of(lead);
        let slots_end = capacity
            .checked_mul(stride)
            .and_then(|d| d.checked_add(data_offset))
            .ok_or(bad("queue size overflows"))?;
        let arena_offset = slots_end.next_multiple_of(128);
        let body_offset = usize::try_from(units)
            .ok()
            .and_then(|u| u.checked_mul(ENTRY_BYTES))
            .and_then(|e| e.checked_add(arena_offset + ARENA_HEADER_BYTES))
            .ok_or(bad("queue size overflows"))?;
        let payload_len = if no_arena {
            slots_end
        } else {
            units
                .checked_mul(unit)
                .and_then(|b| usize::try_from(b).ok())
                .and_then(|b| b.checked_add(body_offset))
                .ok_or(bad("queue size overflows"))?
        };
        Ok(Layout {
            capacity,
            slot_size,
            lead,
            stride,
            data_offset,
            units,
            unit,
            arena_offset,
            body_offset,
            payload_len,
        })
    }
}
