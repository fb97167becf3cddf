//! `RawQueue`: a ring and its body arena in a segment (laid out as `layout.rs` says), shared
//! by `PodQueue`, `Queue`, `ByteQueue` and `JoinableQueue`.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use mproc_segment::liveness;
use mproc_segment::{Segment, SegmentError, SegmentOptions, ShmSafe};
#[cfg(feature = "async")]
use mproc_sync::Parking;

use crate::arena::{Arena, ArenaHeader, Entries, RESERVED_LAZY};
use crate::atomic::{AtomicU64, Ordering};
use crate::layout::{ARENA_HEADER_BYTES, ENTRY_BYTES, Layout};
use crate::ring::{Ring, RingHeader, Slots};

// SAFETY: RingHeader is #[repr(C)] atomics plus padding words that are never written; any bit
// pattern is some (possibly nonsensical) ring state, which the ring's methods tolerate without
// memory unsafety (positions index modulo the capacity).
unsafe impl ShmSafe for RingHeader {}
// SAFETY: as for RingHeader: #[repr(C)] atomics and unused padding; the arena's methods bound
// every position by the unit count copied at open.
unsafe impl ShmSafe for ArenaHeader {}

/// Bytes of a named queue's body arena reserved at creation, and the smallest step by which
/// the reservation grows.
pub(crate) const INITIAL_RESERVE: u64 = 1 << 20;

/// A ring (and arena) in a segment. Owns the segment; cheap to turn into a [`Ring`] or an
/// [`Arena`] per operation.
#[derive(Debug)]
pub(crate) struct RawQueue {
    seg: Segment,
    hdr: NonNull<RingHeader>,
    data: NonNull<u8>,
    layout: Layout,
    shift: u32,
}

// SAFETY: all shared state is reached through atomics or through slots and chunks owned by
// the claim protocols of `Ring` and `Arena`; the segment is Send + Sync.
unsafe impl Send for RawQueue {}
// SAFETY: as above.
unsafe impl Sync for RawQueue {}

/// Slots of a ring in shared memory.
pub(crate) struct ShmSlots<'a> {
    q: &'a RawQueue,
}

impl Slots for ShmSlots<'_> {
    #[inline]
    fn word(&self, idx: usize) -> &AtomicU64 {
        // SAFETY: idx < capacity (masked by the ring); slot `idx` lies inside the payload
        // (data_offset + capacity * stride <= payload length, checked in `wrap`), and its
        // first 8 bytes are 8-aligned (data and stride are multiples of `lead` >= 8, checked
        // in `wrap`). Those bytes are only ever accessed as this atomic.
        unsafe { &*self.q.slot_word_ptr(idx) }
    }

    #[inline]
    unsafe fn with_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: the slot lies inside the payload (checked in `wrap`), and the caller holds
        // it in state Writing, so no other process reads or writes these bytes until it is
        // published.
        let slot = unsafe {
            std::slice::from_raw_parts_mut(self.q.slot_ptr(idx), self.q.layout.slot_size)
        };
        f(slot)
    }

    #[inline]
    unsafe fn with<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: as in `with_mut`; the caller holds the slot in state Reading, so nobody
        // writes it until it is freed.
        let slot =
            unsafe { std::slice::from_raw_parts(self.q.slot_ptr(idx), self.q.layout.slot_size) };
        f(slot)
    }

    fn is_alive(&self, pid: u32) -> bool {
        peer_alive(pid)
    }
}

/// Entries of an arena in shared memory.
pub(crate) struct ShmEntries<'a> {
    q: &'a RawQueue,
}

impl ShmEntries<'_> {
    #[inline]
    fn entry(&self, unit: usize, word: usize) -> &AtomicU64 {
        let l = &self.q.layout;
        // Total: any unit names an entry, and an entry has two words.
        let (unit, word) = (unit & (l.units.max(1) as usize - 1), word & 1);
        // SAFETY: unit < units and word < 2 (masked above); the entries lie inside the payload
        // (body_offset + units * unit <= payload length, checked in `wrap`) at a 128-aligned
        // offset, so each 8-byte word is 8-aligned. Those bytes are only accessed as atomics.
        unsafe {
            &*self
                .q
                .data
                .as_ptr()
                .add(l.arena_offset - l.data_offset + ARENA_HEADER_BYTES)
                .add(unit * ENTRY_BYTES + word * 8)
                .cast::<AtomicU64>()
        }
    }
}

impl Entries for ShmEntries<'_> {
    #[inline]
    fn word(&self, unit: usize) -> &AtomicU64 {
        self.entry(unit, 0)
    }

    #[inline]
    fn link(&self, unit: usize) -> &AtomicU64 {
        self.entry(unit, 1)
    }

    fn is_alive(&self, pid: u32) -> bool {
        peer_alive(pid)
    }

    fn ring_holds(&self, pos: u64) -> bool {
        self.q.ring().holds(pos)
    }
}

/// How long a peer found alive is taken to still be alive without asking the kernel again.
const ALIVE_FOR: Duration = Duration::from_millis(1);

thread_local! {
    /// The last peer found alive by this thread, and when.
    static LAST_ALIVE: std::cell::Cell<Option<(u32, Instant)>> = const { std::cell::Cell::new(None) };
}

/// Whether the peer with token `peer` is alive ([`liveness::peer_alive`]: one `fcntl`). A
/// peer found alive is believed alive for [`ALIVE_FOR`] more: a caller polling in a loop
/// while that peer is between claiming a slot and publishing it (the usual reason to ask)
/// does not pay a system call per poll. A dead peer is then noticed at most that much later.
fn peer_alive(peer: u32) -> bool {
    if peer == liveness::me() {
        return true;
    }
    let now = Instant::now();
    if let Some((p, at)) = LAST_ALIVE.with(std::cell::Cell::get) {
        if p == peer && now.duration_since(at) < ALIVE_FOR {
            return true;
        }
    }
    let alive = liveness::peer_alive(peer);
    if alive {
        LAST_ALIVE.with(|c| c.set(Some((peer, now))));
    }
    alive
}

impl RawQueue {
    /// Where a waiting `get` sleeps (the futures).
    #[cfg(feature = "async")]
    pub(crate) fn get_parkings(&self) -> [Option<&Parking>; 2] {
        [Some(&self.header().not_empty), None]
    }

    /// Where a waiting `put` sleeps (the futures): for a free slot, and for arena space.
    #[cfg(feature = "async")]
    pub(crate) fn put_parkings(&self) -> [Option<&Parking>; 2] {
        let space = self.arena().map(|a| &a.hdr.space);
        [Some(&self.header().not_full), space]
    }

    /// Creates (named) or makes (anonymous, `name == None`) a ring segment.
    pub fn create(
        options: SegmentOptions,
        name: Option<&str>,
        layout: Layout,
    ) -> Result<RawQueue, SegmentError> {
        let body = layout.units * layout.unit;
        // A named queue reserves its ring, its arena's bookkeeping and the first part of its
        // body area now, and the rest of the body as messages first reach it (see
        // `reserve_chunk`): a large arena costs only what it holds, and a small /dev/shm (a
        // container's 64 MiB) takes queues whose arena is larger than it.
        let upfront = body.min(INITIAL_RESERVE);
        let lazy = name.is_some() && upfront < body;
        let mut options = options
            .capacity(layout.capacity as u64)
            .payload_len(layout.payload_len);
        if lazy {
            options = options.reserve_upfront(layout.body_offset + upfront as usize);
        }
        let init = |seg: &Segment| {
            if lazy {
                let arena: &ArenaHeader = seg.view(layout.arena_offset)?;
                arena
                    .reserved
                    .store(RESERVED_LAZY | upfront, Ordering::Relaxed);
            }
            let hdr: &RingHeader = seg.view(0)?;
            hdr.capacity
                .store(layout.capacity as u64, Ordering::Relaxed);
            hdr.slot_size
                .store(layout.slot_size as u64, Ordering::Relaxed);
            hdr.arena_units.store(layout.units, Ordering::Relaxed);
            hdr.arena_unit.store(layout.unit, Ordering::Relaxed);
            hdr.attached.store(1, Ordering::Relaxed);
            Ok::<(), SegmentError>(())
        };
        let seg = match name {
            Some(name) => options.create_with(name, init)?,
            None => options.anonymous_with(init)?,
        };
        Self::wrap(seg)
    }

    /// Opens a named ring segment; `options` carry the expected kind and element type.
    pub fn open(options: SegmentOptions, name: &str) -> Result<RawQueue, SegmentError> {
        Self::attach(options.open(name)?)
    }

    /// Attaches to a ring segment through its file descriptor (an anonymous queue handed to
    /// a child across `exec`); `options` carry the expected kind and element type.
    pub fn from_fd(options: SegmentOptions, fd: OwnedFd) -> Result<RawQueue, SegmentError> {
        Self::attach(options.from_fd(fd)?)
    }

    /// A second handle on the same queue (a duplicate of the segment's fd, mapped again).
    pub fn try_clone(&self) -> Result<RawQueue, SegmentError> {
        use std::os::fd::AsFd;
        let fd = self
            .seg
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| SegmentError::Io {
                call: "dup",
                errno: mproc_segment::errno_of(&e),
            })?;
        Self::from_fd(SegmentOptions::any(), fd)
    }

    fn attach(seg: Segment) -> Result<RawQueue, SegmentError> {
        let q = Self::wrap(seg)?;
        q.header().attached.fetch_add(1, Ordering::SeqCst);
        Ok(q)
    }

    /// Copies the geometry recorded in the segment once and validates it against the segment
    /// header and the real length. The slot alignment is the element alignment recorded in
    /// the segment header.
    fn wrap(seg: Segment) -> Result<RawQueue, SegmentError> {
        let corrupt = |reason| SegmentError::CorruptHeader { reason };
        let hdr: &RingHeader = seg.view(0)?;
        let capacity = hdr.capacity.load(Ordering::Relaxed);
        let slot_size = hdr.slot_size.load(Ordering::Relaxed);
        let units = hdr.arena_units.load(Ordering::Relaxed);
        let unit = hdr.arena_unit.load(Ordering::Relaxed);
        let header = seg
            .header()
            .ok_or(corrupt("queue segment without a header"))?;
        let (header_cap, align) = (header.capacity, header.element.align as usize);
        if capacity != header_cap || !capacity.is_power_of_two() || capacity > 1 << 31 {
            return Err(corrupt("queue capacity disagrees with the segment header"));
        }
        let slot_size = usize::try_from(slot_size).map_err(|_| corrupt("slot size too large"))?;
        let layout = Layout::build(capacity as usize, slot_size, align, units, unit)
            .map_err(|_| corrupt("queue geometry out of range"))?;
        if layout.payload_len > seg.len() {
            return Err(corrupt("queue slots do not fit the segment"));
        }
        let hdr = NonNull::from(hdr);
        let data = NonNull::new(seg.as_ptr().wrapping_add(layout.data_offset))
            .ok_or(corrupt("null payload"))?;
        if (data.as_ptr() as usize) % layout.lead != 0
            || (seg.as_ptr() as usize + layout.arena_offset) % 128 != 0
        {
            return Err(corrupt("queue slots are misaligned"));
        }
        Ok(RawQueue {
            seg,
            hdr,
            data,
            layout,
            shift: capacity.trailing_zeros(),
        })
    }

    pub fn header(&self) -> &RingHeader {
        // SAFETY: checked view of the segment we own; ShmSafe.
        unsafe { self.hdr.as_ref() }
    }

    /// Slot `idx`'s state word. Total: any index names a slot (masked, as the ring masks its
    /// positions; capacity is a power of two), and every slot lies inside the payload
    /// (`wrap`). The pointer is computed without `unsafe`; those who dereference it rely on
    /// this.
    #[inline]
    fn slot_word_ptr(&self, idx: usize) -> *const AtomicU64 {
        let idx = idx & (self.layout.capacity - 1);
        self.data
            .as_ptr()
            .wrapping_add(idx * self.layout.stride)
            .cast::<AtomicU64>()
    }

    /// The first byte of slot `idx`'s message bytes (`slot_size` of them), inside the
    /// payload for any `idx` (masked, as in `slot_word_ptr`).
    #[inline]
    pub fn slot_ptr(&self, idx: usize) -> *mut u8 {
        let idx = idx & (self.layout.capacity - 1);
        self.data
            .as_ptr()
            .wrapping_add(idx * self.layout.stride + self.layout.lead)
    }

    #[inline]
    pub fn ring(&self) -> Ring<'_, ShmSlots<'_>> {
        Ring {
            hdr: self.header(),
            slots: ShmSlots { q: self },
            mask: self.layout.capacity as u64 - 1,
            shift: self.shift,
        }
    }

    /// Reserves the pages of the arena chunk of `units` units at position `pos` (just
    /// allocated, not yet touched) unless they are; `Err(bytes asked for)` if the
    /// shared-memory filesystem has no room. Reservations grow by doubling (at least
    /// [`INITIAL_RESERVE`]), so a queue makes a few `fallocate` calls in its life.
    pub(crate) fn reserve_chunk(&self, pos: u64, units: u64) -> Result<(), u64> {
        let Some(arena) = self.arena() else {
            return Ok(());
        };
        // SYNC POINT: pairs with the Release `fetch_max` below (in any process): bytes below
        // the word were reserved before it was raised.
        let word = arena.hdr.reserved.load(Ordering::Acquire);
        if word & RESERVED_LAZY == 0 {
            // 0: reserved in full at creation. (A peer that cleared the flag can make us
            // skip reserving; so could one that truncated the file. Either way it can only
            // make this process fault on a full /dev/shm, as any writer of the file can.)
            return Ok(());
        }
        let l = &self.layout;
        let body = l.units * l.unit;
        let have = (word & !RESERVED_LAZY).min(body);
        let end = ((pos & (l.units - 1)) + units)
            .saturating_mul(l.unit)
            .min(body);
        if end <= have {
            return Ok(());
        }
        let want = end
            .max(have.saturating_mul(2))
            .max(INITIAL_RESERVE)
            .next_multiple_of(4096)
            .min(body);
        let reserve = |to: u64| {
            self.seg
                .reserve(l.body_offset + have as usize, (to - have) as usize)
        };
        // Short of room for the doubled step: just this chunk's pages, which may still fit.
        let got = match reserve(want) {
            Ok(()) => want,
            Err(_) => {
                let need = end.next_multiple_of(4096).min(body);
                reserve(need).map_err(|_| need - have)?;
                need
            }
        };
        arena
            .hdr
            .reserved
            .fetch_max(RESERVED_LAZY | got, Ordering::Release);
        Ok(())
    }

    /// The body arena, if the queue has one.
    #[inline]
    pub fn arena(&self) -> Option<Arena<'_, ShmEntries<'_>>> {
        if self.layout.units == 0 {
            return None;
        }
        let offset = self.layout.arena_offset;
        // SAFETY: the arena header lies inside the payload at a 128-aligned offset (`wrap`);
        // ArenaHeader is ShmSafe.
        let hdr = unsafe {
            &*self
                .data
                .as_ptr()
                .add(offset - self.layout.data_offset)
                .cast::<ArenaHeader>()
        };
        Some(Arena {
            hdr,
            entries: ShmEntries { q: self },
            units: self.layout.units,
            shift: self.layout.units.trailing_zeros(),
        })
    }

    /// Bytes of the arena held by chunks `tail` has not passed (messages not yet taken, or
    /// being written or read), after freeing what dead processes left at the tail.
    pub fn arena_used(&self) -> u64 {
        self.arena().map_or(0, |a| {
            a.advance_tail(true);
            a.used() * self.layout.unit
        })
    }

    /// Arena units set aside because their chunk word failed validation.
    pub fn arena_corrupt_skipped(&self) -> u64 {
        self.arena()
            .map_or(0, |a| a.hdr.corrupt_skipped.load(Ordering::Relaxed))
    }

    /// Bytes of the arena (0 without one).
    pub fn arena_bytes(&self) -> u64 {
        self.layout.units * self.layout.unit
    }

    /// Units a body of `bytes` bytes takes (at least one), or `None` if it exceeds the arena.
    pub fn units_for(&self, bytes: usize) -> Option<u64> {
        if self.layout.units == 0 {
            return None;
        }
        let units = (bytes.max(1) as u64).div_ceil(self.layout.unit);
        (units <= self.layout.units).then_some(units)
    }

    /// The first byte of the chunk at arena position `pos`. Callers check (through the chunk
    /// word) that the chunk's units lie inside the arena before touching its bytes.
    /// Total: `unit < units` (masked), so the unit's first byte lies inside the body area,
    /// which lies inside the payload (`wrap`).
    #[inline]
    pub fn chunk_ptr(&self, pos: u64) -> *mut u8 {
        let l = &self.layout;
        let unit = (pos & (l.units.max(1) - 1)) as usize;
        self.data
            .as_ptr()
            .wrapping_add(l.body_offset - l.data_offset + unit * l.unit as usize)
    }

    pub fn capacity(&self) -> usize {
        self.layout.capacity
    }

    pub fn slot_size(&self) -> usize {
        self.layout.slot_size
    }

    pub fn segment(&self) -> &Segment {
        &self.seg
    }

    pub fn close(&self) {
        self.ring().close();
        if let Some(arena) = self.arena() {
            arena.hdr.space.wake_all();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::SeqCst) != 0
    }

    pub fn len(&self) -> usize {
        self.ring().len()
    }

    /// Decrements the attach count; true if this was the last handle.
    pub fn detach(&self) -> bool {
        self.header().attached.fetch_sub(1, Ordering::SeqCst) == 1
    }
}

impl Drop for RawQueue {
    fn drop(&mut self) {
        self.detach();
    }
}
