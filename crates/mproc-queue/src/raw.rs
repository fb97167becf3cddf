//! `RawQueue`: a ring laid out in a segment, shared by `PodQueue`, `Queue` and
//! `JoinableQueue`.
//!
//! # Payload layout
//! | offset | what |
//! |---|---|
//! | 0 | [`RingHeader`] (384 bytes, 128-aligned) |
//! | `data_offset` (384) | `capacity` slots of `stride` bytes |
//!
//! A slot is its state word (`AtomicU64`) followed, `lead` bytes in (the element alignment,
//! at least 8), by `slot_size` bytes of message; `stride` rounds `lead + slot_size` up to
//! `lead`. Keeping the word next to its bytes means a producer and a consumer working on
//! neighbouring slots touch one cache line per message, not two.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use mproc_segment::{Segment, SegmentError, SegmentOptions, ShmSafe, current_pid};
use mproc_sync::Parking;

use crate::atomic::{AtomicU64, Ordering};
use crate::ring::{Pop, Push, Ring, RingHeader, Slots};

// SAFETY: RingHeader is #[repr(C)] atomics plus padding words that are never written; any bit
// pattern is some (possibly nonsensical) ring state, which the ring's methods tolerate without
// memory unsafety (positions index modulo the capacity).
unsafe impl ShmSafe for RingHeader {}

const HEADER_BYTES: usize = std::mem::size_of::<RingHeader>();

/// How long a blocked `put`/`get` sleeps before looking again, so that a peer that died
/// holding the slot it waits for (and so never wakes it) is noticed.
const REPOLL: Duration = Duration::from_millis(200);

/// The geometry of a ring in a payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    pub capacity: usize,
    pub slot_size: usize,
    /// Offset of a slot's bytes from its word.
    pub lead: usize,
    pub stride: usize,
    pub data_offset: usize,
    pub payload_len: usize,
}

impl Layout {
    /// Capacity rounded up to a power of two; slots aligned to `align` (at least 8).
    pub fn new(capacity: usize, slot_size: usize, align: usize) -> Result<Layout, SegmentError> {
        let bad = |reason| SegmentError::InvalidSize { reason };
        if capacity == 0 {
            return Err(bad("queue capacity must be at least 1"));
        }
        if capacity > 1 << 31 {
            return Err(bad("queue capacity must be at most 2^31"));
        }
        if slot_size == 0 || slot_size > u32::MAX as usize {
            return Err(bad("slot size must be between 1 and 2^32 - 1 bytes"));
        }
        let capacity = capacity.next_power_of_two();
        let lead = align.max(8);
        let stride = lead
            .checked_add(slot_size)
            .map(|s| s.next_multiple_of(lead))
            .ok_or(bad("queue size overflows"))?;
        let data_offset = HEADER_BYTES.next_multiple_of(lead);
        let payload_len = capacity
            .checked_mul(stride)
            .and_then(|d| d.checked_add(data_offset))
            .ok_or(bad("queue size overflows"))?;
        Ok(Layout {
            capacity,
            slot_size,
            lead,
            stride,
            data_offset,
            payload_len,
        })
    }
}

/// A ring in a segment. Owns the segment; cheap to turn into a [`Ring`] per operation.
#[derive(Debug)]
pub(crate) struct RawQueue {
    seg: Segment,
    hdr: NonNull<RingHeader>,
    data: NonNull<u8>,
    layout: Layout,
    shift: u32,
}

// SAFETY: all shared state is reached through atomics or through slots owned by the claim
// protocol of `Ring`; the segment is Send + Sync.
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
        unsafe {
            &*self
                .q
                .data
                .as_ptr()
                .add(idx * self.q.layout.stride)
                .cast::<AtomicU64>()
        }
    }

    #[inline]
    unsafe fn with_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        let l = &self.q.layout;
        // SAFETY: the slot lies inside the payload (data_offset + capacity * stride ==
        // payload_len, checked in `wrap`), and the caller holds it in state Writing, so no
        // other process reads or writes these bytes until it is published.
        let slot = unsafe {
            std::slice::from_raw_parts_mut(
                self.q.data.as_ptr().add(idx * l.stride + l.lead),
                l.slot_size,
            )
        };
        f(slot)
    }

    #[inline]
    unsafe fn with<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let l = &self.q.layout;
        // SAFETY: as in `with_mut`; the caller holds the slot in state Reading, so nobody
        // writes it until it is freed.
        let slot = unsafe {
            std::slice::from_raw_parts(
                self.q.data.as_ptr().add(idx * l.stride + l.lead),
                l.slot_size,
            )
        };
        f(slot)
    }

    fn is_alive(&self, pid: u32) -> bool {
        peer_alive(pid)
    }
}

/// How long a peer found alive is taken to still be alive without asking the kernel again.
const ALIVE_FOR: Duration = Duration::from_millis(1);

thread_local! {
    /// The last peer found alive by this thread, and when.
    static LAST_ALIVE: std::cell::Cell<Option<(u32, Instant)>> = const { std::cell::Cell::new(None) };
}

/// Whether `pid` is alive (a signal probe and a /proc read). A peer found alive is believed
/// alive for [`ALIVE_FOR`] more: a caller polling in a loop while that peer is between claiming
/// a slot and publishing it (the usual reason to ask) does not pay two system calls per poll.
/// A dead peer is then noticed at most that much later.
fn peer_alive(pid: u32) -> bool {
    let now = Instant::now();
    if let Some((p, at)) = LAST_ALIVE.with(std::cell::Cell::get) {
        if p == pid && now.duration_since(at) < ALIVE_FOR {
            return true;
        }
    }
    let alive = mproc_segment::ProcessId { pid, start_time: 0 }.is_alive();
    if alive {
        LAST_ALIVE.with(|c| c.set(Some((pid, now))));
    }
    alive
}

impl RawQueue {
    /// Creates (named) or makes (anonymous, `name == None`) a ring segment.
    pub fn create(
        options: SegmentOptions,
        name: Option<&str>,
        layout: Layout,
    ) -> Result<RawQueue, SegmentError> {
        let options = options
            .capacity(layout.capacity as u64)
            .payload_len(layout.payload_len);
        let init = |seg: &Segment| {
            let hdr: &RingHeader = seg.view(0)?;
            hdr.capacity
                .store(layout.capacity as u64, Ordering::Relaxed);
            hdr.slot_size
                .store(layout.slot_size as u64, Ordering::Relaxed);
            hdr.attached.store(1, Ordering::Relaxed);
            Ok::<(), SegmentError>(())
        };
        let seg = match name {
            Some(name) => options.create_with(name, init)?,
            None => options.anonymous_with(init)?,
        };
        Self::wrap(seg, layout.slot_size)
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

    fn attach(seg: Segment) -> Result<RawQueue, SegmentError> {
        let hdr: &RingHeader = seg.view(0)?;
        let slot_size = hdr.slot_size.load(Ordering::Relaxed) as usize;
        let q = Self::wrap(seg, slot_size)?;
        q.header().attached.fetch_add(1, Ordering::SeqCst);
        Ok(q)
    }

    /// Validates the geometry recorded in the segment against its real length. The slot
    /// alignment is the element alignment recorded in the segment header.
    fn wrap(seg: Segment, slot_size: usize) -> Result<RawQueue, SegmentError> {
        let corrupt = |reason| SegmentError::CorruptHeader { reason };
        let hdr: &RingHeader = seg.view(0)?;
        let capacity = hdr.capacity.load(Ordering::Relaxed);
        let header = seg
            .header()
            .ok_or(corrupt("queue segment without a header"))?;
        let (header_cap, align) = (header.capacity, header.element.align as usize);
        if capacity != header_cap || !capacity.is_power_of_two() {
            return Err(corrupt("queue capacity disagrees with the segment header"));
        }
        let layout = Layout::new(capacity as usize, slot_size, align)?;
        if layout.capacity as u64 != capacity || layout.payload_len > seg.len() {
            return Err(corrupt("queue slots do not fit the segment"));
        }
        let hdr = NonNull::from(hdr);
        let data = NonNull::new(seg.as_ptr().wrapping_add(layout.data_offset))
            .ok_or(corrupt("null payload"))?;
        if (data.as_ptr() as usize) % layout.lead != 0 {
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

    #[inline]
    pub fn ring(&self) -> Ring<'_, ShmSlots<'_>> {
        Ring {
            hdr: self.header(),
            slots: ShmSlots { q: self },
            mask: self.layout.capacity as u64 - 1,
            shift: self.shift,
        }
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

    /// A non-blocking push (`try_put`): checks whether peers holding slots are alive.
    pub fn try_push(&self, fill: impl FnMut(&mut [u8])) -> Push {
        self.ring().try_push(current_pid(), true, fill)
    }

    /// A non-blocking pop (`try_get`): checks whether peers holding slots are alive.
    pub fn try_pop<R>(&self, take: impl FnMut(&[u8]) -> R) -> Pop<R> {
        self.ring().try_pop(current_pid(), true, take)
    }

    /// Pushes, waiting for room until `deadline` (forever if `None`).
    pub fn push_deadline(
        &self,
        deadline: Option<Instant>,
        mut fill: impl FnMut(&mut [u8]),
    ) -> Push {
        let hdr = self.header();
        let me = current_pid();
        // Fast path first: no clock read (which `block` needs) when there is room.
        match self.ring().try_push(me, false, &mut fill) {
            Push::Full => {}
            done => return done,
        }
        block(&hdr.not_full, deadline, |check| {
            match self.ring().try_push(me, check, &mut fill) {
                Push::Full => None,
                done => Some(done),
            }
        })
        .unwrap_or(Push::Full)
    }

    /// Pops, waiting for a message until `deadline` (forever if `None`). `Pop::Empty` means
    /// the deadline passed.
    pub fn pop_deadline<R>(
        &self,
        deadline: Option<Instant>,
        mut take: impl FnMut(&[u8]) -> R,
    ) -> Pop<R> {
        let hdr = self.header();
        let me = current_pid();
        // Fast path first: no clock read (which `block` needs) when a message is there.
        match self.ring().try_pop(me, false, &mut take) {
            Pop::Empty | Pop::InProgress => {}
            done => return done,
        }
        block(&hdr.not_empty, deadline, |check| {
            match self.ring().try_pop(me, check, &mut take) {
                Pop::Empty | Pop::InProgress => None,
                done => Some(done),
            }
        })
        .unwrap_or(Pop::Empty)
    }

    pub fn close(&self) {
        self.ring().close()
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

/// Parks on `parking` until `poll` succeeds or `deadline` passes, re-polling every
/// [`REPOLL`] so that a dead peer's slot is eventually noticed even though it never wakes us.
/// `poll(check_peers)` is asked to test peers' liveness only after the first [`REPOLL`] of
/// waiting: a live peer in the middle of its copy is the common case and costs nothing to
/// wait for, while a liveness test is a system call and a /proc read.
fn block<T>(
    parking: &Parking,
    deadline: Option<Instant>,
    mut poll: impl FnMut(bool) -> Option<T>,
) -> Option<T> {
    let mut check_peers = false;
    loop {
        let chunk = Instant::now() + REPOLL;
        let until = deadline.map_or(chunk, |d| d.min(chunk));
        if let Some(v) = parking.block_on(Some(until), || poll(check_peers)) {
            return Some(v);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        check_peers = true;
    }
}
