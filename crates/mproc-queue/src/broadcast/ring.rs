//! The shared ring under every broadcast flavour: one ring in shared memory that every
//! subscriber reads in full, each through its own cursor.
//!
//! # Layout (payload of a `Kind::BROADCAST` segment; offsets, never pointers)
//! - [`BroadcastHeader`] (256 bytes, a cache line per writer): geometry, `head` (messages
//!   published so far), the producers' robust lock, and where subscribers and a blocked
//!   producer sleep.
//! - The subscriber table: [`SubSlot`]s of 64 bytes (a cache line each). A slot's `owner`
//!   word is 0 when free, else the subscriber's process token (the liveness roll's: decided
//!   by the kernel, valid across pid namespaces), its lagging policy and a claimed bit.
//!   `cursor` is the next message the subscriber reads (the producer reads it to know what a
//!   blocking subscriber still needs), `lagged` how many it lost.
//! - The ring: `capacity` slots of one stamp word (message index + 1 once published,
//!   [`WRITING`] while being written) and `item` bytes of message. A `PodBroadcast`'s item
//!   is its type's size; a `Broadcast`'s or `ByteBroadcast`'s is an 8-byte length followed
//!   by room for the longest message.
//!
//! Producers take turns under the robust lock: a producer killed mid-write leaves the slot
//! stamped [`WRITING`] and `head` unmoved, and the next producer (told `OwnerDied`) writes that
//! message index again. Readers copy a slot between two reads of its stamp (a seqlock): a
//! copy whose stamp moved was overwritten and is never returned.
//!
//! Everything read from shared memory is treated as written by someone who may be lying:
//! indices are masked, counters compared with wrapping arithmetic, lengths bounded, and a
//! reader that meets a stamp it cannot explain skips at least that message (reported as
//! lag), so no value of any shared word makes a call panic or spin forever.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use mproc_segment::{Segment, SegmentError, SegmentOptions, ShmSafe, liveness};
use mproc_sync::{LockError, Parking, RawLock};

use super::{Lagging, RecvError, SubscribeError};

/// A slot's stamp while a producer writes it.
pub const WRITING: u64 = u64::MAX;
/// How many subscribers a broadcast has room for unless set (`BroadcastOptions`).
pub const DEFAULT_SUBSCRIBERS: usize = 64;
/// How often a blocked call looks for dead peers (a dead blocking subscriber, a producer).
const PEER_CHECK: Duration = Duration::from_millis(50);

const HEADER_BYTES: usize = 256;
const SUB_BYTES: usize = 64;
const CLAIMED: u64 = 1 << 40;
const BLOCKS: u64 = 1 << 41;
const PEER_BITS: u64 = 0xffff_ffff;
/// A blocking subscriber wakes a producer waiting for room every this many messages it reads.
const WAKE_EVERY: u64 = 64;
/// The length word in front of a length-prefixed message.
pub(super) const LEN_BYTES: usize = 8;
/// How long a subscriber that caught up yields its CPU, looking for the next message, before
/// it sleeps.
const YIELD_FOR: Duration = Duration::from_micros(50);

/// The header, one cache line per writer: the geometry (written once), the producers' line,
/// the subscribers' sleeping line and the producers' sleeping line, so that nobody's
/// writes make another's reads miss on every message.
#[repr(C)]
#[derive(Debug)]
struct BroadcastHeader {
    capacity: AtomicU64,
    item: AtomicU64,
    stride: AtomicU64,
    subscribers: AtomicU64,
    closed: AtomicU64,
    /// One past the highest subscriber slot ever taken: producers look at no slot beyond.
    in_use: AtomicU64,
    _pad0: [u8; 16],
    /// Messages sent so far (written by the producer holding `lock`).
    head: AtomicU64,
    lock: RawLock,
    _pad1: [u8; 8],
    new_message: Parking,
    /// Set by a subscriber about to sleep on `new_message`: the next send wakes it (once
    /// per sleep, not once per message).
    msg_sleepers: AtomicU32,
    _pad2: [u8; 52],
    room: Parking,
    /// Set by a producer about to sleep on `room`: the next blocking subscriber whose cursor
    /// reaches `room_at` wakes it.
    room_sleepers: AtomicU32,
    _pad3: [u8; 4],
    /// The cursor a blocking subscriber must reach to wake a producer waiting for room: half
    /// a ring behind the message it waits to write (0, as in a segment made before this
    /// word was used, wakes it at any cursor).
    room_at: AtomicU64,
    /// Which subscriber (slot index + 1) that is: the slowest when the producer looked.
    /// Others reaching `room_at` would wake it for nothing, at every message they read
    /// (0 wakes it for anyone).
    room_for: AtomicU64,
    _pad4: [u8; 32],
}

const _: () = {
    assert!(std::mem::size_of::<BroadcastHeader>() == HEADER_BYTES);
    assert!(std::mem::offset_of!(BroadcastHeader, head) == 64);
    assert!(std::mem::offset_of!(BroadcastHeader, new_message) == 128);
    assert!(std::mem::offset_of!(BroadcastHeader, room) == 192);
    assert!(std::mem::offset_of!(BroadcastHeader, room_at) == 208);
};

// SAFETY: `#[repr(C)]`, atomics and mproc-sync's shared-memory types only: valid for every
// bit pattern, no pointers.
unsafe impl ShmSafe for BroadcastHeader {}

/// One subscriber's line (64 bytes: subscribers write their cursors at every message, and
/// two on one line would make each other's writes miss).
#[repr(C)]
#[derive(Debug)]
struct SubSlot {
    owner: AtomicU64,
    cursor: AtomicU64,
    lagged: AtomicU64,
    _reserved: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<SubSlot>() == SUB_BYTES);

// SAFETY: `#[repr(C)]` atomics only.
unsafe impl ShmSafe for SubSlot {}

/// The geometry of a mapped broadcast, copied out of shared memory once and checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Geometry {
    capacity: u64,
    item: usize,
    stride: usize,
    subscribers: usize,
}

impl Geometry {
    pub(super) fn new(
        capacity: usize,
        item: usize,
        subscribers: usize,
    ) -> Result<Geometry, SegmentError> {
        let capacity = capacity.max(2).checked_next_power_of_two();
        let stride = (8 + item).checked_next_multiple_of(8);
        match (capacity, stride) {
            (Some(c), Some(s))
                if c <= 1 << 30 && subscribers <= 4096 && subscribers > 0 && item <= 1 << 30 =>
            {
                Ok(Geometry {
                    capacity: c as u64,
                    item,
                    stride: s,
                    subscribers,
                })
            }
            _ => Err(SegmentError::InvalidSize {
                reason: "broadcast capacity, item size or subscriber count out of range",
            }),
        }
    }

    fn ring_offset(&self) -> usize {
        HEADER_BYTES + self.subscribers * SUB_BYTES
    }

    pub(super) fn payload_len(&self) -> Option<usize> {
        (self.capacity as usize)
            .checked_mul(self.stride)?
            .checked_add(self.ring_offset())
    }
}

/// A mapped broadcast ring: what producers and subscribers share.
#[derive(Debug)]
struct Ring {
    seg: Segment,
    hdr: NonNull<BroadcastHeader>,
    geo: Geometry,
}

// SAFETY: the pointer is into a shared mapping owned by `seg`, accessed only through atomics.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Checks the geometry written in `seg`. `item` is the message size this type needs, or
    /// `None` for a length-prefixed flavour (any size of at least the 8-byte length).
    fn wrap(seg: Segment, item: Option<usize>) -> Result<Ring, SegmentError> {
        let corrupt = |reason| SegmentError::CorruptHeader { reason };
        let hdr: &BroadcastHeader = seg.view(0)?;
        let geo = Geometry {
            capacity: hdr.capacity.load(Ordering::Relaxed),
            item: hdr.item.load(Ordering::Relaxed) as usize,
            stride: hdr.stride.load(Ordering::Relaxed) as usize,
            subscribers: hdr.subscribers.load(Ordering::Relaxed) as usize,
        };
        let expect = Geometry::new(geo.capacity as usize, geo.item, geo.subscribers)
            .map_err(|_| corrupt("broadcast geometry out of range"))?;
        match item {
            Some(item) if geo.item != item => {
                return Err(corrupt("broadcast message size differs from this type's"));
            }
            None if geo.item < LEN_BYTES => {
                return Err(corrupt(
                    "broadcast slots too small for a length-prefixed message",
                ));
            }
            _ => {}
        }
        if expect.capacity != geo.capacity || expect.stride != geo.stride {
            return Err(corrupt("broadcast geometry is inconsistent"));
        }
        if geo.payload_len().is_none_or(|n| n > seg.len()) {
            return Err(corrupt("broadcast ring does not fit its segment"));
        }
        if (seg.as_ptr() as usize) % 8 != 0 {
            return Err(corrupt("broadcast segment is misaligned"));
        }
        let hdr = NonNull::from(hdr);
        Ok(Ring { seg, hdr, geo })
    }

    fn header(&self) -> &BroadcastHeader {
        // SAFETY: a checked view of the mapping `seg` owns (ShmSafe, in bounds, aligned).
        unsafe { self.hdr.as_ref() }
    }

    fn sub(&self, i: usize) -> &SubSlot {
        let i = i % self.geo.subscribers;
        // SAFETY: `i` < subscribers, so the slot lies inside the payload (`wrap` checked the
        // length); 8-aligned (256 + 64 i from an 8-aligned base); SubSlot is atomics only.
        unsafe {
            &*self
                .seg
                .as_ptr()
                .add(HEADER_BYTES + i * SUB_BYTES)
                .cast::<SubSlot>()
        }
    }

    /// Slot `index`'s stamp word and its message bytes (masked: any index names a slot
    /// inside the payload).
    fn slot(&self, index: u64) -> (&AtomicU64, SlotBytes<'_>) {
        let i = (index & (self.geo.capacity - 1)) as usize;
        // SAFETY: `i` < capacity, so stamp and message lie inside the payload (`wrap`); the
        // stamp is 8-aligned (ring offset and stride are multiples of 8).
        unsafe {
            let base = self
                .seg
                .as_ptr()
                .add(self.geo.ring_offset() + i * self.geo.stride);
            let bytes = SlotBytes {
                ptr: base.add(8),
                len: self.geo.item,
                _ring: PhantomData,
            };
            (&*base.cast::<AtomicU64>(), bytes)
        }
    }
}

/// The message bytes of one slot: what a producer writes and a subscriber copies, only
/// through `atomic_copy` (other processes read and write the same bytes concurrently).
pub(super) struct SlotBytes<'a> {
    ptr: *mut u8,
    len: usize,
    _ring: PhantomData<&'a Ring>,
}

impl SlotBytes<'_> {
    /// How many bytes the slot holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Writes `data` at `at`; false (nothing written) if it does not fit.
    pub(super) fn store(&self, at: usize, data: &[u8]) -> bool {
        if at.checked_add(data.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: `at..at + data.len()` lies inside the slot's `len` bytes (checked above),
        // inside the mapping the borrowed ring keeps alive; every process accesses these
        // bytes only through `atomic_copy`.
        unsafe { mproc_segment::atomic_copy::store(self.ptr.add(at), data) };
        true
    }

    /// Copies `out.len()` bytes from `at`; false (nothing copied) if they lie outside.
    pub(super) fn load(&self, at: usize, out: &mut [u8]) -> bool {
        if at.checked_add(out.len()).is_none_or(|end| end > self.len) {
            return false;
        }
        // SAFETY: as in `store`: in bounds of the slot, accessed only through `atomic_copy`.
        unsafe { mproc_segment::atomic_copy::load(self.ptr.add(at), out) };
        true
    }
}

/// Writes a length-prefixed message (`LEN_BYTES` little-endian length, then the bytes);
/// false if it does not fit.
pub(super) fn store_prefixed(slot: &SlotBytes<'_>, message: &[u8]) -> bool {
    slot.len() - LEN_BYTES >= message.len()
        && slot.store(LEN_BYTES, message)
        && slot.store(0, &(message.len() as u64).to_le_bytes())
}

/// Copies a length-prefixed message into `out` (cleared first). `Err(length)` if the length
/// word is more than the slot holds (a lying peer: the caller reports it once the stamp
/// shows the copy was not overwritten).
pub(super) fn load_prefixed(slot: &SlotBytes<'_>, out: &mut Vec<u8>) -> Result<(), u64> {
    let mut len = [0u8; LEN_BYTES];
    slot.load(0, &mut len);
    let n = u64::from_le_bytes(len);
    let room = (slot.len() - LEN_BYTES) as u64;
    if n > room {
        return Err(n);
    }
    out.clear();
    out.resize(n as usize, 0);
    slot.load(LEN_BYTES, out);
    Ok(())
}

/// Why a send stopped waiting.
pub(super) enum Stop {
    Closed,
    Timeout,
    Full,
}

/// The producer side every flavour shares: the mapped ring and this handle's knowledge of
/// how far it may write without looking at the blocking subscribers again.
#[derive(Debug)]
pub(super) struct Core {
    ring: Arc<Ring>,
    /// Messages up to this index (exclusive) may be written without looking at the blocking
    /// subscribers again (the slowest one's cursor + capacity when last looked).
    room_until: AtomicU64,
}

impl Core {
    /// Makes a new ring: named if `name` is given, else anonymous.
    pub(super) fn create(
        opts: SegmentOptions,
        geo: Geometry,
        name: Option<&str>,
    ) -> Result<Core, SegmentError> {
        let len = geo.payload_len().ok_or(SegmentError::InvalidSize {
            reason: "broadcast too large",
        })?;
        let opts = opts.capacity(geo.capacity).payload_len(len);
        let init = |seg: &Segment| {
            let h: &BroadcastHeader = seg.view(0)?;
            h.capacity.store(geo.capacity, Ordering::Relaxed);
            h.item.store(geo.item as u64, Ordering::Relaxed);
            h.stride.store(geo.stride as u64, Ordering::Relaxed);
            h.subscribers
                .store(geo.subscribers as u64, Ordering::Relaxed);
            h.lock.init(false);
            Ok::<(), SegmentError>(())
        };
        let seg = match name {
            Some(n) => opts.create_with(n, init)?,
            None => opts.anonymous_with(init)?,
        };
        Core::wrap(seg, Some(geo.item))
    }

    /// Wraps an opened segment, checking its geometry (`item` as in [`Ring::wrap`]).
    pub(super) fn wrap(seg: Segment, item: Option<usize>) -> Result<Core, SegmentError> {
        Ok(Core {
            ring: Arc::new(Ring::wrap(seg, item)?),
            room_until: AtomicU64::new(0),
        })
    }

    pub(super) fn segment(&self) -> &Segment {
        &self.ring.seg
    }

    pub(super) fn capacity(&self) -> usize {
        self.ring.geo.capacity as usize
    }

    /// The message bytes of a slot (for length-prefixed flavours, the length word included).
    pub(super) fn item(&self) -> usize {
        self.ring.geo.item
    }

    pub(super) fn sent(&self) -> u64 {
        self.ring.header().head.load(Ordering::Acquire)
    }

    pub(super) fn close(&self) {
        let h = self.ring.header();
        h.closed.store(1, Ordering::SeqCst);
        h.new_message.wake_all();
        h.room.wake_all();
    }

    pub(super) fn is_closed(&self) -> bool {
        self.ring.header().closed.load(Ordering::Acquire) != 0
    }

    pub(super) fn subscribers(&self) -> usize {
        (0..self.ring.geo.subscribers)
            .filter(|&i| {
                let o = self.ring.sub(i).owner.load(Ordering::Acquire);
                o & CLAIMED != 0 && liveness::peer_alive((o & PEER_BITS) as u32)
            })
            .count()
    }

    /// Takes a free slot, or one whose process died, for a new subscriber that reads every
    /// message sent from now on.
    pub(super) fn subscribe(&self, lagging: Lagging) -> Result<Reader, SubscribeError> {
        let ring = &self.ring;
        let me = u64::from(liveness::me()) & PEER_BITS;
        let mine = me | CLAIMED | if lagging == Lagging::Block { BLOCKS } else { 0 };
        for pass in 0..2 {
            for i in 0..ring.geo.subscribers {
                let s = ring.sub(i);
                let o = s.owner.load(Ordering::Acquire);
                let free = o == 0
                    || (pass == 1
                        && (o & CLAIMED == 0 || !liveness::peer_alive((o & PEER_BITS) as u32)));
                // Claimed first without the blocking bit, so no producer waits on the cursor
                // before it is set.
                if free
                    && s.owner
                        .compare_exchange(o, me | CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                {
                    ring.header()
                        .in_use
                        .fetch_max(i as u64 + 1, Ordering::SeqCst);
                    let start = ring.header().head.load(Ordering::SeqCst);
                    s.cursor.store(start, Ordering::SeqCst);
                    s.lagged.store(0, Ordering::Relaxed);
                    s.owner.store(mine, Ordering::SeqCst);
                    return Ok(Reader {
                        ring: Arc::clone(ring),
                        at: Cursor {
                            index: i,
                            owner: mine,
                            next: start,
                            lagged: 0,
                        },
                    });
                }
            }
        }
        Err(SubscribeError::NoRoom(ring.geo.subscribers))
    }

    /// Publishes one message written by `write` into its slot, waiting (unless `no_wait`,
    /// until `deadline`) while a blocking subscriber is a whole ring behind.
    pub(super) fn send(
        &self,
        deadline: Option<Instant>,
        no_wait: bool,
        write: impl FnOnce(&SlotBytes<'_>),
    ) -> Result<(), Stop> {
        let ring = &self.ring;
        let h = ring.header();
        if h.closed.load(Ordering::Acquire) != 0 {
            return Err(Stop::Closed);
        }
        let _guard = match deadline {
            _ if no_wait => h.lock.try_lock(),
            Some(d) => h
                .lock
                .lock_timeout(d.saturating_duration_since(Instant::now())),
            None => h.lock.lock(),
        };
        let _guard = match _guard {
            Ok(g) => g,
            // A producer died holding the lock: the message it was writing was never counted
            // (`head` moves only after the stamp); it is written again below.
            Err(LockError::OwnerDied(g)) => {
                h.lock.make_consistent();
                g
            }
            Err(LockError::WouldBlock) => return Err(Stop::Full),
            Err(_) => return Err(Stop::Timeout),
        };
        let index = h.head.load(Ordering::Acquire);
        if index >= self.room_until.load(Ordering::Relaxed) {
            self.wait_for_room(index, deadline, no_wait)?;
        }
        let (stamp, bytes) = ring.slot(index);
        stamp.store(WRITING, Ordering::Relaxed);
        fence(Ordering::Release);
        write(&bytes);
        stamp.store(index.wrapping_add(1), Ordering::Release);
        h.head.store(index.wrapping_add(1), Ordering::SeqCst);
        // A subscriber sets the flag before it looks at `head` a last time and sleeps: either
        // it sees this message, or this sees its flag (both SeqCst).
        if h.msg_sleepers.load(Ordering::SeqCst) != 0
            && h.msg_sleepers.swap(0, Ordering::SeqCst) != 0
        {
            h.new_message.wake_all();
        }
        Ok(())
    }
    /// Waits until every live blocking subscriber is less than a ring behind `index`;
    /// frees the slots of dead ones on the way.
    fn wait_for_room(
        &self,
        index: u64,
        deadline: Option<Instant>,
        no_wait: bool,
    ) -> Result<(), Stop> {
        let ring = &self.ring;
        let h = ring.header();
        let cap = ring.geo.capacity;
        let mut checked = Instant::now();
        // Once it has had to wait, a `send` is woken by the slowest blocking subscriber when
        // half a ring is free, not at every slot: woken for every message a slow subscriber
        // reads, it would pay a sleep and a wake-up per message (per 64 at best) in
        // lock-step with it; woken at half a ring, it writes half a ring while the
        // subscribers read. Any room does once its nap ends (a subscriber that stopped
        // reading part way never holds it up for longer), and at once for a `send_timeout`,
        // as its caller expects.
        let half = if deadline.is_none() {
            (cap / 2).max(1)
        } else {
            1
        };
        let mut woken = false;
        // Whether the flag is up and this producer counted on `room`: only after a look that
        // found no room (a flag left up would make every subscriber's read wake nobody).
        let mut armed = false;
        loop {
            let waiting = armed.then(|| h.room.prepare());
            if h.closed.load(Ordering::Acquire) != 0 {
                return Err(Stop::Closed);
            }
            let look_at_peers = checked.elapsed() >= PEER_CHECK;
            if look_at_peers {
                checked = Instant::now();
            }
            // Room for `half` messages after a wake-up, for one otherwise.
            let need = if woken { cap + 1 - half } else { cap };
            let (mut slowest, mut slowest_slot) = (index, 0);
            let in_use = (h.in_use.load(Ordering::Acquire) as usize).min(ring.geo.subscribers);
            for i in 0..in_use {
                let s = ring.sub(i);
                let o = s.owner.load(Ordering::Acquire);
                if o & (CLAIMED | BLOCKS) != CLAIMED | BLOCKS {
                    continue;
                }
                let c = s.cursor.load(Ordering::Acquire);
                // A cursor past `index` (a lying peer) counts as caught up.
                // Holding this send back: if its process is dead, its slot is free again and
                // nobody waits for it.
                if index.wrapping_sub(c) >= need
                    && c <= index
                    && look_at_peers
                    && !liveness::peer_alive((o & PEER_BITS) as u32)
                {
                    let _ = s
                        .owner
                        .compare_exchange(o, 0, Ordering::AcqRel, Ordering::Relaxed);
                    continue;
                }
                if c <= index && c < slowest {
                    (slowest, slowest_slot) = (c, i);
                }
            }
            if index - slowest < need {
                self.room_until
                    .store(slowest.saturating_add(cap), Ordering::Relaxed);
                return Ok(());
            }
            if no_wait {
                return Err(Stop::Full);
            }
            let Some(waiting) = waiting else {
                // Say how far the subscribers must get, raise the flag, then look once more
                // before sleeping (the handshake with `Cursor::publish`).
                h.room_at.store(
                    index.saturating_add(half).saturating_sub(cap),
                    Ordering::Relaxed,
                );
                h.room_for.store(slowest_slot as u64 + 1, Ordering::Relaxed);
                h.room_sleepers.store(1, Ordering::SeqCst);
                armed = true;
                continue;
            };
            armed = false;
            let nap = Instant::now() + PEER_CHECK;
            let until = deadline.map_or(nap, |d| d.min(nap));
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Stop::Timeout);
            }
            // Woken by a subscriber (or spuriously) rather than at the end of the nap.
            woken = waiting.sleep(Some(until)) && Instant::now() < until;
        }
    }
}

/// The subscriber side every flavour shares: its slot in the table and where it is.
/// Dropping it gives the slot back (so does its process's death).
#[derive(Debug)]
pub(super) struct Reader {
    ring: Arc<Ring>,
    at: Cursor,
}

/// Where a subscriber is: its slot, its owner word, the next message it reads, and what it
/// lost.
#[derive(Debug)]
struct Cursor {
    index: usize,
    owner: u64,
    next: u64,
    lagged: u64,
}

impl Reader {
    pub(super) fn lagged(&self) -> u64 {
        self.at.lagged
    }

    pub(super) fn pending(&self) -> u64 {
        let head = self.ring.header().head.load(Ordering::Acquire);
        head.saturating_sub(self.at.next)
    }

    /// Receives the next message, copied out of its slot by `read` (which may be called more
    /// than once: a copy the producer overwrote meanwhile is thrown away). Waits (unless
    /// `no_wait`, until `deadline`) for one.
    pub(super) fn recv<R>(
        &mut self,
        deadline: Option<Instant>,
        no_wait: bool,
        mut read: impl FnMut(&SlotBytes<'_>) -> R,
    ) -> Result<R, RecvError> {
        let ring = &*self.ring;
        let at = &mut self.at;
        let h = ring.header();
        loop {
            match at.take(ring, &mut read) {
                Some(r) => return r,
                None if h.closed.load(Ordering::Acquire) != 0 => {
                    // Closed: whatever was sent before the close is read first.
                    return at.take(ring, &mut read).unwrap_or(Err(RecvError::Closed));
                }
                None if no_wait => {
                    at.publish(ring);
                    return Err(RecvError::Empty);
                }
                None => {}
            }
            // Caught up: the producer may be waiting for this cursor.
            at.publish(ring);
            // A producer in full flow sends again within microseconds: give it the CPU for
            // a moment and look again before paying a sleep and a wake-up.
            let spin_until = Instant::now() + YIELD_FOR;
            // It watches the stamp of the slot the next message goes to, not `head`.
            let (stamp, _) = ring.slot(at.next);
            let want = at.next.wrapping_add(1);
            while stamp.load(Ordering::Acquire) != want
                && h.closed.load(Ordering::Relaxed) == 0
                && Instant::now() < spin_until
            {
                std::thread::yield_now();
            }
            if stamp.load(Ordering::Acquire) == want {
                continue;
            }
            h.msg_sleepers.store(1, Ordering::SeqCst);
            let waiting = h.new_message.prepare();
            if h.head.load(Ordering::SeqCst) > at.next || h.closed.load(Ordering::SeqCst) != 0 {
                continue;
            }
            let nap = Instant::now() + PEER_CHECK;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(RecvError::Timeout);
            }
            waiting.sleep(Some(deadline.map_or(nap, |d| d.min(nap))));
        }
    }
}

impl Cursor {
    /// The next message if one was sent (or the lag to report), without waiting. The fast
    /// path reads only the slot's stamp: `head`, a cache line the producer writes at every
    /// send, is read when the stamp is not the one expected.
    fn take<R>(
        &mut self,
        ring: &Ring,
        read: &mut impl FnMut(&SlotBytes<'_>) -> R,
    ) -> Option<Result<R, RecvError>> {
        let cap = ring.geo.capacity;
        let want = self.next.wrapping_add(1);
        let (stamp, bytes) = ring.slot(self.next);
        let mut before = stamp.load(Ordering::Acquire);
        if before != want {
            let head = ring.header().head.load(Ordering::Acquire);
            if head <= self.next {
                // Not sent yet (or a `head` that went backwards: a lying peer; wait for it).
                return None;
            }
            if head - self.next > cap {
                return Some(Err(self.skip_to(ring, head - cap)));
            }
            // Sent by `head`: the stamp, written before `head`, says so now unless the slot
            // was overwritten since or never written as it should have been.
            before = stamp.load(Ordering::Acquire);
            if before != want {
                let oldest = head.saturating_sub(cap).max(want);
                return Some(Err(self.skip_to(ring, oldest)));
            }
        }
        let value = read(&bytes);
        fence(Ordering::Acquire);
        if stamp.load(Ordering::Relaxed) != before {
            // Overwritten while it was copied (a lap ahead): skip at least this message,
            // reported as lag.
            let oldest = ring
                .header()
                .head
                .load(Ordering::Acquire)
                .saturating_sub(cap)
                .max(want);
            return Some(Err(self.skip_to(ring, oldest)));
        }
        self.advance(ring, want);
        Some(Ok(value))
    }
    fn skip_to(&mut self, ring: &Ring, to: u64) -> RecvError {
        let lost = to - self.next;
        self.lagged = self.lagged.saturating_add(lost);
        ring.sub(self.index)
            .lagged
            .fetch_add(lost, Ordering::Relaxed);
        self.advance(ring, to);
        RecvError::Lagged(lost)
    }

    fn advance(&mut self, ring: &Ring, to: u64) {
        self.next = to;
        if self.owner & BLOCKS != 0
            && (to % WAKE_EVERY == 0
                || (ring.header().room_sleepers.load(Ordering::Relaxed) != 0 && self.awaited(ring)))
        {
            // A producer waits for this subscriber to reach `room_at`, and it has: the full
            // handshake, which wakes it. Also every `WAKE_EVERY` messages, in case the plain
            // load above missed the flag.
            self.publish(ring);
        } else {
            // Otherwise a plain store (on x86): a producer about to wait reads it and sees
            // how far this subscriber got, even while it is not in `recv`.
            ring.sub(self.index).cursor.store(to, Ordering::Release);
        }
    }

    /// Whether a producer waiting for room waits for this subscriber, and it got far enough.
    fn awaited(&self, ring: &Ring) -> bool {
        let h = ring.header();
        let whom = h.room_for.load(Ordering::Relaxed);
        (whom == 0 || whom == self.index as u64 + 1)
            && self.next >= h.room_at.load(Ordering::Relaxed)
    }

    /// Writes the cursor where producers read it, and wakes a producer waiting for room if
    /// this cursor reached `room_at` (the SeqCst handshake with `wait_for_room`'s flag: no
    /// wake-up is missed).
    fn publish(&self, ring: &Ring) {
        ring.sub(self.index)
            .cursor
            .store(self.next, Ordering::SeqCst);
        let h = ring.header();
        // The flag's SeqCst load orders the load of `room_at` after it: the producer stored
        // `room_at` before raising the flag.
        if self.owner & BLOCKS != 0
            && h.room_sleepers.load(Ordering::SeqCst) != 0
            && self.awaited(ring)
            && h.room_sleepers.swap(0, Ordering::SeqCst) != 0
        {
            h.room.wake_all();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let s = self.ring.sub(self.at.index);
        // Only if the slot is still ours (not freed as dead and taken by someone else).
        let _ = s
            .owner
            .compare_exchange(self.at.owner, 0, Ordering::AcqRel, Ordering::Relaxed);
        self.ring.header().room.wake_all();
    }
}
