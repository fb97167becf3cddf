//! The shared-memory hash map under [`BytesDict`](super::BytesDict) and
//! [`Dict`](super::Dict): byte keys to byte values.
//!
//! # Layout (payload of a `Kind::DICT` segment; offsets, never pointers)
//! - [`DictHeader`] (512 bytes): the geometry (written once at create), the seqlock word
//!   readers validate against (its own cache line), the writers' robust lock with the entry
//!   count and the bump pointer, and one free-list head per block size class.
//! - The bucket table: `buckets` words (a power of two), each the payload offset of the first
//!   record of its chain, 0 for none.
//! - The arena: blocks of 64 bytes × a power of two. A record is one block:
//!   `meta` (its size class, and the next free block's offset while it is free), `next` (the
//!   chain), `hash`, `lens` (key length | value length << 32), then the key's and the value's
//!   bytes.
//!
//! # Writers: copy-on-write records, one 8-byte publication
//! Writers take turns under a robust lock. An insert writes a whole new record into a free
//! block, then links it in with one 8-byte store (into the bucket, or the predecessor's
//! `next`), which replaces the old record for that key at once; a remove unlinks with one
//! store. The old record's block then goes on a free list. So a writer SIGKILLed at any
//! instruction leaves every chain whole, with each key at its old or its new value, and at
//! worst a block that is neither linked nor free: the next writer is told `OwnerDied` by the
//! lock and rebuilds the allocator from what the buckets reach (every other block is free),
//! which also recounts the entries (see [`Map::rebuild`]).
//!
//! # Readers: lock-free, validated by a sequence word
//! A reader walks a chain and copies the value out with atomic loads, between two reads of
//! `seq`. Blocks are only rewritten after `seq` has moved (odd while a writer rewrites a
//! block that readers may still be reading: one popped from a free list; +2 when a rebuild
//! or a `clear` hands blocks back), so a copy whose `seq` moved is thrown away and the read
//! retried; a copy whose `seq` did not is the value at one instant. Fresh blocks from the
//! bump pointer were never reachable since `seq` last moved and need no such care, nor do
//! writes that only link and unlink. A reader that keeps failing (a writer rewriting blocks
//! all the time, or a writer that died with `seq` odd) reads under the lock instead, so no
//! reader waits forever.
//!
//! Everything read from shared memory is checked as if written by someone lying: offsets
//! against the arena, lengths against the block, chain walks against the number of blocks.
//! A reader that meets a structure it cannot follow while `seq` stands still reads again
//! under the lock, where the writer-side checks repair the map and report it.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering, fence};

use mproc_segment::{Segment, SegmentError, ShmSafe};
use mproc_sync::{LockError, RawGuard, RawLock};

use super::{DictError, Repair};

/// Header size (bytes).
pub(crate) const HEADER_BYTES: u64 = 512;
/// The smallest block (bytes); every block is this times a power of two.
const BLOCK: u64 = 64;
const MIN_CLASS: u32 = 6;
/// Size classes: 64 B to 2 GiB.
pub(crate) const CLASSES: usize = 26;
const CLASS_BITS: u64 = 63;
/// A record's head: meta, next, hash, lens.
pub(crate) const RECORD_HEAD: u64 = 32;
/// Validated lock-free attempts before a read takes the lock.
const READ_TRIES: u32 = 32;
/// The largest arena (bytes) and bucket count a dict may have.
const MAX_ARENA: u64 = 1 << 40;
const MAX_BUCKETS: u64 = 1 << 30;

/// The header. Line 0: geometry; line 1: `seq` alone (every read loads it twice); line 2:
/// the writers' lock, count and bump pointer; line 3: counters; then the free lists.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct DictHeader {
    buckets: AtomicU64,
    arena: AtomicU64,
    arena_len: AtomicU64,
    _geometry: [AtomicU64; 5],
    seq: AtomicU64,
    _seq_line: [AtomicU64; 7],
    lock: RawLock,
    len: AtomicU64,
    bump: AtomicU64,
    repairs: AtomicU64,
    writes: AtomicU64,
    _counters: [AtomicU64; 6],
    free: [AtomicU64; CLASSES],
    _tail: [AtomicU64; 6],
}

const _: () = {
    assert!(std::mem::size_of::<DictHeader>() == HEADER_BYTES as usize);
    assert!(std::mem::offset_of!(DictHeader, seq) == 64);
    assert!(std::mem::offset_of!(DictHeader, lock) == 128);
    assert!(std::mem::offset_of!(DictHeader, repairs) == 192);
    assert!(std::mem::offset_of!(DictHeader, free) == 256);
};

// SAFETY: `#[repr(C)]`, atomics and mproc-sync's shared-memory lock only: valid for every bit
// pattern, no pointers.
unsafe impl ShmSafe for DictHeader {}

/// A dict's geometry, copied out of shared memory once and checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) buckets: u64,
    /// Payload offset of the arena (a multiple of 64).
    pub(crate) arena: u64,
    pub(crate) arena_len: u64,
}

impl Geometry {
    pub(crate) fn new(entries: usize, bytes: usize) -> Result<Geometry, SegmentError> {
        let invalid = |reason| SegmentError::InvalidSize { reason };
        let buckets = (entries as u64)
            .max(16)
            .checked_next_power_of_two()
            .filter(|&b| b <= MAX_BUCKETS)
            .ok_or(invalid("dict entries out of range"))?;
        let arena_len = (bytes as u64)
            .checked_next_multiple_of(BLOCK)
            .filter(|&n| (BLOCK..=MAX_ARENA).contains(&n))
            .ok_or(invalid("dict bytes out of range (64 B to 1 TiB)"))?;
        let arena = (HEADER_BYTES + buckets * 8).next_multiple_of(BLOCK);
        Ok(Geometry {
            buckets,
            arena,
            arena_len,
        })
    }

    pub(crate) fn payload_len(&self) -> u64 {
        self.arena + self.arena_len
    }

    fn end(&self) -> u64 {
        self.arena + self.arena_len
    }

    fn blocks(&self) -> u64 {
        self.arena_len / BLOCK
    }

    /// The largest size class a block may have in this arena.
    fn max_class(&self) -> usize {
        let largest = 63 - self.arena_len.leading_zeros();
        ((largest - MIN_CLASS) as usize).min(CLASSES - 1)
    }
}

/// The block size class for a record of `key` + `value` bytes (`None`: larger than any).
pub(crate) fn class_for(key: usize, value: usize) -> Option<usize> {
    let need = (RECORD_HEAD as usize)
        .checked_add(key)?
        .checked_add(value)?
        .max(BLOCK as usize)
        .checked_next_power_of_two()?;
    let class = need.trailing_zeros().checked_sub(MIN_CLASS)? as usize;
    (class < CLASSES).then_some(class)
}

fn class_size(class: usize) -> u64 {
    BLOCK << class
}

/// The hash of a key's bytes, the same in every process and build (the bucket is its low
/// bits): 8 bytes at a time through a multiply-rotate, then murmur3's finaliser.
pub fn hash_key(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (bytes.len() as u64).wrapping_mul(K) ^ 0x2545_f491_4f6c_dd1d;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w) ^ 0xff)
            .wrapping_mul(K)
            .rotate_left(29);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A chain that is not one: an offset outside the arena, a record longer than its block, a
/// loop. Found under the lock, it is repaired and reported as [`DictError::Corrupt`].
#[derive(Debug)]
pub(crate) struct Broken;

/// A record's words.
struct Record<'a> {
    meta: &'a AtomicU64,
    next: &'a AtomicU64,
    hash: &'a AtomicU64,
    lens: &'a AtomicU64,
    /// The first byte after the head.
    body: *const u8,
    /// Bytes from `body` to the arena's end.
    room: u64,
}

impl Record<'_> {
    /// Key and value lengths, if they fit the arena.
    fn lens(&self) -> Option<(u64, u64)> {
        let l = self.lens.load(Ordering::Relaxed);
        let (k, v) = (l & 0xffff_ffff, l >> 32);
        (k + v <= self.room).then_some((k, v))
    }
}

/// Where a key was found: the offset of the word that points at its record, and the
/// record's offset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Place {
    pub(crate) link: u64,
    pub(crate) at: u64,
}

/// What a scan of the whole structure found.
struct Survey {
    /// Reachable records: (offset, block size).
    live: Vec<(u64, u64)>,
    /// Links to cut: a chain goes wrong after them.
    cuts: Vec<u64>,
    /// Bytes on the free lists, and whether they were all well formed.
    free_bytes: u64,
    free_ok: bool,
}

/// Space usage, for [`Dict::stats`](super::Dict::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DictStats {
    /// Entries.
    pub entries: u64,
    /// Bytes in the blocks of the entries.
    pub used_bytes: u64,
    /// Bytes free for new entries (free lists plus never-used space).
    pub free_bytes: u64,
    /// The arena's size: `used_bytes + free_bytes` always, since no space leaks.
    pub arena_bytes: u64,
    /// How many times a writer's death (or a corrupted structure) was repaired.
    pub repairs: u64,
}

/// An entry's key and value bytes.
pub type ByteEntry = (Vec<u8>, Vec<u8>);

/// A mapped dict.
#[derive(Debug)]
pub(crate) struct Map {
    seg: Segment,
    hdr: NonNull<DictHeader>,
    pub(crate) geo: Geometry,
}

// SAFETY: the pointer is into a shared mapping owned by `seg`, accessed only through atomics.
unsafe impl Send for Map {}
// SAFETY: as above.
unsafe impl Sync for Map {}

#[cfg(feature = "crash-points")]
pub mod crash_points {
    //! Test-only fault injection (the `crash-points` feature): [`arm`] makes this process
    //! SIGKILL itself at the `n`th step of a dict write (every store to shared memory a
    //! write makes is a step), so tests can kill a writer between every pair of stores.
    use std::sync::atomic::{AtomicU64, Ordering};

    static AT: AtomicU64 = AtomicU64::new(0);
    static SEEN: AtomicU64 = AtomicU64::new(0);

    /// Kill this process at the `n`th step from now (0 disarms).
    pub fn arm(n: u64) {
        SEEN.store(0, Ordering::SeqCst);
        AT.store(n, Ordering::SeqCst);
    }

    /// Steps taken since [`arm`].
    pub fn steps() -> u64 {
        SEEN.load(Ordering::SeqCst)
    }

    pub(crate) fn step() {
        let n = SEEN.fetch_add(1, Ordering::SeqCst) + 1;
        if AT.load(Ordering::SeqCst) == n {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
        }
    }
}

#[inline(always)]
fn step() {
    #[cfg(feature = "crash-points")]
    crash_points::step();
}

impl Map {
    pub(crate) fn init(seg: &Segment, geo: Geometry) -> Result<(), SegmentError> {
        let h: &DictHeader = seg.view(0)?;
        h.buckets.store(geo.buckets, Ordering::Relaxed);
        h.arena.store(geo.arena, Ordering::Relaxed);
        h.arena_len.store(geo.arena_len, Ordering::Relaxed);
        h.bump.store(geo.arena, Ordering::Relaxed);
        h.lock.init(false);
        Ok(())
    }

    pub(crate) fn wrap(seg: Segment) -> Result<Map, SegmentError> {
        let corrupt = |reason| SegmentError::CorruptHeader { reason };
        let hdr: &DictHeader = seg.view(0)?;
        let found = Geometry {
            buckets: hdr.buckets.load(Ordering::Relaxed),
            arena: hdr.arena.load(Ordering::Relaxed),
            arena_len: hdr.arena_len.load(Ordering::Relaxed),
        };
        if !found.buckets.is_power_of_two() || found.buckets > MAX_BUCKETS {
            return Err(corrupt("dict bucket count is not a power of two in range"));
        }
        let expect = Geometry::new(found.buckets as usize, found.arena_len as usize)
            .map_err(|_| corrupt("dict geometry out of range"))?;
        if expect.arena != found.arena || expect.arena_len != found.arena_len {
            return Err(corrupt("dict geometry is inconsistent"));
        }
        if found.payload_len() > seg.len() as u64 {
            return Err(corrupt("dict arena does not fit its segment"));
        }
        if (seg.as_ptr() as usize) % 8 != 0 {
            return Err(corrupt("dict segment is misaligned"));
        }
        if hdr.lock.is_recursive() != Some(false) {
            return Err(corrupt("dict lock is not initialised"));
        }
        let hdr = NonNull::from(hdr);
        Ok(Map {
            seg,
            hdr,
            geo: found,
        })
    }

    pub(crate) fn segment(&self) -> &Segment {
        &self.seg
    }

    fn header(&self) -> &DictHeader {
        // SAFETY: a checked view of the mapping `seg` owns (ShmSafe, in bounds, aligned).
        unsafe { self.hdr.as_ref() }
    }

    /// The word at payload offset `off`, which callers have checked is 8-aligned and inside
    /// the payload (`wrap` checked the payload holds header, buckets and arena).
    fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= self.geo.payload_len());
        // SAFETY: in bounds and 8-aligned (callers; the base is 8-aligned, `wrap`); every
        // process accesses these words only atomically.
        unsafe { &*self.seg.as_ptr().add(off as usize).cast::<AtomicU64>() }
    }

    fn bucket_link(&self, hash: u64) -> u64 {
        HEADER_BYTES + (hash & (self.geo.buckets - 1)) * 8
    }

    /// Whether `off` may start a block (inside the arena, on a 64-byte boundary).
    fn is_block(&self, off: u64) -> bool {
        off >= self.geo.arena && off < self.geo.end() && (off - self.geo.arena) % BLOCK == 0
    }

    /// The record at `off`, if `off` may start a block.
    fn record(&self, off: u64) -> Option<Record<'_>> {
        if !self.is_block(off) {
            return None;
        }
        // SAFETY: `off` is in the arena and the arena ends on a 64-byte boundary, so the
        // 32-byte head lies inside the payload.
        let body = unsafe { self.seg.as_ptr().add((off + RECORD_HEAD) as usize) };
        Some(Record {
            meta: self.word(off),
            next: self.word(off + 8),
            hash: self.word(off + 16),
            lens: self.word(off + 24),
            body,
            room: self.geo.end() - off - RECORD_HEAD,
        })
    }

    /// Whether the `len` bytes at `at` equal `key` (atomic loads, 64 bytes at a time).
    fn bytes_equal(at: *const u8, key: &[u8]) -> bool {
        let mut buf = [0u8; 64];
        let mut done = 0;
        while done < key.len() {
            let n = (key.len() - done).min(64);
            // SAFETY: callers checked `at..at + key.len()` lies inside the arena, which every
            // process accesses atomically.
            unsafe { mproc_segment::atomic_copy::load(at.add(done), &mut buf[..n]) };
            if buf[..n] != key[done..done + n] {
                return false;
            }
            done += n;
        }
        true
    }

    /// Finds `key` in its chain.
    pub(crate) fn find(&self, key: &[u8], hash: u64) -> Result<Option<Place>, Broken> {
        let mut link = self.bucket_link(hash);
        for _ in 0..=self.geo.blocks() {
            let at = self.word(link).load(Ordering::Acquire);
            if at == 0 {
                return Ok(None);
            }
            let r = self.record(at).ok_or(Broken)?;
            if r.hash.load(Ordering::Relaxed) == hash {
                let (k, _) = r.lens().ok_or(Broken)?;
                if k == key.len() as u64 && Self::bytes_equal(r.body, key) {
                    return Ok(Some(Place { link, at }));
                }
            }
            link = at + 8;
        }
        Err(Broken)
    }

    /// Copies the value of the record at `at` into `out`.
    pub(crate) fn read_value(&self, at: u64, out: &mut Vec<u8>) -> Result<(), Broken> {
        let r = self.record(at).ok_or(Broken)?;
        let (k, v) = r.lens().ok_or(Broken)?;
        out.clear();
        out.resize(v as usize, 0);
        // SAFETY: key + value lie inside the arena (`lens` checked them against `room`).
        unsafe { mproc_segment::atomic_copy::load(r.body.add(k as usize), out) };
        Ok(())
    }

    /// Reads `key`'s value into `out` without the lock when it can (see the module docs).
    /// `Ok(false)`: absent.
    pub(crate) fn get(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool, DictError> {
        let hash = hash_key(key);
        let seq = &self.header().seq;
        for attempt in 0..READ_TRIES {
            let s1 = seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                if attempt > 4 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            let found = self.lookup(key, hash, out);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == s1 {
                match found {
                    Ok(f) => return Ok(f),
                    // Broken with `seq` standing still: look again under the lock, which
                    // repairs it.
                    Err(Broken) => break,
                }
            }
        }
        let guard = self.lock()?;
        self.lookup(key, hash, out)
            .map_err(|Broken| self.broken(guard))
    }

    /// Finds `key` and copies its value into `out`: `Ok(false)` if absent. Unvalidated
    /// without the lock (`get` checks `seq` around it).
    fn lookup(&self, key: &[u8], hash: u64, out: &mut Vec<u8>) -> Result<bool, Broken> {
        match self.find(key, hash)? {
            Some(p) => self.read_value(p.at, out).map(|()| true),
            None => Ok(false),
        }
    }

    /// Takes the writers' lock. A holder that died: rebuild, and `OwnerDied`.
    pub(crate) fn lock(&self) -> Result<RawGuard<'_>, DictError> {
        let h = self.header();
        match h.lock.lock() {
            Ok(g) => Ok(g),
            Err(LockError::OwnerDied(g)) => {
                let repair = self.rebuild();
                h.repairs.fetch_add(1, Ordering::Relaxed);
                h.lock.make_consistent();
                drop(g);
                Err(DictError::OwnerDied(repair))
            }
            Err(e) => Err(DictError::Lock(e.to_string())),
        }
    }

    /// A structure found broken under the lock: rebuild, count it, release.
    pub(crate) fn broken(&self, guard: RawGuard<'_>) -> DictError {
        let repair = self.rebuild();
        self.header().repairs.fetch_add(1, Ordering::Relaxed);
        drop(guard);
        DictError::Corrupt(repair)
    }

    pub(crate) fn len(&self) -> u64 {
        self.header().len.load(Ordering::Relaxed)
    }

    /// Sets (`Some`) or removes (`None`) `key` under the lock the caller holds. `Ok(true)`
    /// if the key was there. `old` receives the old value's bytes if it was.
    pub(crate) fn set(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        found: Option<Place>,
    ) -> Result<bool, SetError> {
        let h = self.header();
        let hash = hash_key(key);
        match value {
            Some(v) => {
                let class = class_for(key.len(), v.len())
                    .filter(|&c| c <= self.geo.max_class())
                    .ok_or(SetError::TooLarge)?;
                let (at, reused) = match self.alloc(class)? {
                    Some(a) => a,
                    None => {
                        // Out of room: coalesce what is free (a rebuild) and try once more.
                        let r = self.rebuild();
                        if r.dropped > 0 {
                            return Err(SetError::Corrupt(r));
                        }
                        self.alloc(class)?.ok_or(SetError::Full)?
                    }
                };
                let rec = self.record(at).ok_or(SetError::Broken)?;
                let link = found.map_or_else(|| self.bucket_link(hash), |p| p.link);
                let next = match found {
                    Some(p) => self
                        .record(p.at)
                        .ok_or(SetError::Broken)?
                        .next
                        .load(Ordering::Relaxed),
                    None => self.word(link).load(Ordering::Relaxed),
                };
                rec.meta.store(class as u64, Ordering::Relaxed);
                rec.next.store(next, Ordering::Relaxed);
                rec.hash.store(hash, Ordering::Relaxed);
                rec.lens
                    .store(key.len() as u64 | (v.len() as u64) << 32, Ordering::Relaxed);
                // SAFETY: the block holds head + key + value (`class_for`) and lies inside the
                // arena (`alloc` checked it); shared bytes are accessed only atomically.
                unsafe {
                    mproc_segment::atomic_copy::store(rec.body, key);
                    mproc_segment::atomic_copy::store(rec.body.add(key.len()), v);
                }
                step();
                if reused {
                    h.seq.fetch_add(1, Ordering::Release);
                    step();
                }
                self.word(link).store(at, Ordering::Release);
                step();
                match found {
                    Some(p) => self.free(p.at),
                    None => {
                        h.len.fetch_add(1, Ordering::Relaxed);
                    }
                }
                step();
            }
            None => {
                let Some(p) = found else {
                    return Ok(false);
                };
                let next = self
                    .record(p.at)
                    .ok_or(SetError::Broken)?
                    .next
                    .load(Ordering::Relaxed);
                self.word(p.link).store(next, Ordering::Release);
                step();
                self.free(p.at);
                step();
                h.len.fetch_sub(1, Ordering::Relaxed);
                step();
            }
        }
        h.writes.fetch_add(1, Ordering::Relaxed);
        Ok(found.is_some())
    }

    /// Marks the start of a rewrite of blocks readers may still be reading.
    fn begin_reuse(&self) {
        self.header().seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        step();
    }

    /// A block of `class`: `Some((offset, reused))`; `reused` blocks were handed out before,
    /// and `begin_reuse` has been called for them (the caller ends it once written). `None`:
    /// no room.
    fn alloc(&self, class: usize) -> Result<Option<(u64, bool)>, SetError> {
        let h = self.header();
        if let Some(at) = self.pop(class)? {
            self.begin_reuse();
            return Ok(Some((at, true)));
        }
        let size = class_size(class);
        let bump = h.bump.load(Ordering::Relaxed);
        if self.is_block(bump) && bump + size <= self.geo.end() {
            h.bump.store(bump + size, Ordering::Relaxed);
            step();
            return Ok(Some((bump, false)));
        }
        for bigger in class + 1..CLASSES {
            if let Some(at) = self.pop(bigger)? {
                self.begin_reuse();
                // Split: keep the first `size` bytes; the rest goes back as one block of each
                // class from `class` up to `bigger - 1`.
                for k in class..bigger {
                    self.push(at + class_size(k), k);
                    step();
                }
                return Ok(Some((at, true)));
            }
        }
        Ok(None)
    }

    /// Pops a block off free list `class`.
    fn pop(&self, class: usize) -> Result<Option<u64>, SetError> {
        let head = &self.header().free[class];
        let at = head.load(Ordering::Relaxed);
        if at == 0 {
            return Ok(None);
        }
        let rec = self.record(at).ok_or(SetError::Broken)?;
        let meta = rec.meta.load(Ordering::Relaxed);
        let link = meta & !CLASS_BITS;
        if meta & CLASS_BITS != class as u64
            || at + class_size(class) > self.geo.end()
            || (link != 0 && !self.is_block(link))
        {
            return Err(SetError::Broken);
        }
        head.store(link, Ordering::Relaxed);
        step();
        Ok(Some(at))
    }

    /// Puts the block at `at` (checked) on free list `class`.
    fn push(&self, at: u64, class: usize) {
        let head = &self.header().free[class];
        self.word(at).store(
            head.load(Ordering::Relaxed) | class as u64,
            Ordering::Relaxed,
        );
        head.store(at, Ordering::Relaxed);
    }

    /// Frees the record at `at` (reached through a chain, so a block start).
    fn free(&self, at: u64) {
        let class = (self.word(at).load(Ordering::Relaxed) & CLASS_BITS) as usize;
        // A class that does not fit (a scribbled meta word) leaks the block until the next
        // rebuild rather than corrupting a free list.
        if class <= self.geo.max_class() && at + class_size(class) <= self.geo.end() {
            self.push(at, class);
        }
    }

    /// Removes every entry, under the lock the caller holds.
    pub(crate) fn clear(&self) {
        let h = self.header();
        for b in 0..self.geo.buckets {
            self.word(HEADER_BYTES + b * 8).store(0, Ordering::Release);
        }
        step();
        h.len.store(0, Ordering::Relaxed);
        self.hand_back();
        for f in &h.free {
            f.store(0, Ordering::Relaxed);
        }
        h.bump.store(self.geo.arena, Ordering::Relaxed);
        step();
        h.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves `seq` on (to an even value), so that readers that started before see that
    /// blocks they may be reading are about to be handed out again.
    fn hand_back(&self) {
        let seq = &self.header().seq;
        let s = seq.load(Ordering::Relaxed);
        seq.store((s + 2) & !1, Ordering::Relaxed);
        fence(Ordering::Release);
        step();
    }

    /// Walks the whole structure without changing it.
    fn survey(&self) -> Survey {
        let h = self.header();
        let blocks = self.geo.blocks() as usize;
        let mut seen = vec![0u64; blocks.div_ceil(64)];
        // Marks the blocks of [at, at + size); false if any was marked already.
        let mut mark = |at: u64, size: u64| {
            let first = ((at - self.geo.arena) / BLOCK) as usize;
            let n = (size / BLOCK) as usize;
            if (first..first + n).any(|i| seen[i / 64] & 1 << (i % 64) != 0) {
                return false;
            }
            (first..first + n).for_each(|i| seen[i / 64] |= 1 << (i % 64));
            true
        };
        let mut live = Vec::new();
        let mut cuts = Vec::new();
        for b in 0..self.geo.buckets {
            let mut link = HEADER_BYTES + b * 8;
            loop {
                let at = self.word(link).load(Ordering::Acquire);
                if at == 0 {
                    break;
                }
                let ok = self.record(at).and_then(|r| {
                    let class = (r.meta.load(Ordering::Relaxed) & CLASS_BITS) as usize;
                    let size = class_size(class);
                    let (k, v) = r.lens()?;
                    let hash = r.hash.load(Ordering::Relaxed);
                    (class <= self.geo.max_class()
                        && at + size <= self.geo.end()
                        && RECORD_HEAD + k + v <= size
                        && hash & (self.geo.buckets - 1) == b
                        && mark(at, size))
                    .then_some(size)
                });
                match ok {
                    Some(size) => {
                        live.push((at, size));
                        link = at + 8;
                    }
                    None => {
                        cuts.push(link);
                        break;
                    }
                }
            }
        }
        let mut free_bytes = 0;
        let mut free_ok = true;
        'lists: for (class, head) in h.free.iter().enumerate() {
            let size = class_size(class);
            let mut at = head.load(Ordering::Relaxed);
            while at != 0 {
                let Some(r) = self.record(at) else {
                    free_ok = false;
                    break 'lists;
                };
                let meta = r.meta.load(Ordering::Relaxed);
                if meta & CLASS_BITS != class as u64
                    || at + size > self.geo.end()
                    || !mark(at, size)
                {
                    free_ok = false;
                    break 'lists;
                }
                free_bytes += size;
                at = meta & !CLASS_BITS;
            }
        }
        let bump = h.bump.load(Ordering::Relaxed);
        if self.is_block(bump) || bump == self.geo.end() {
            // Blocks past the bump pointer must be neither live nor free.
            let first = ((bump - self.geo.arena) / BLOCK) as usize;
            if (first..blocks).any(|i| seen[i / 64] & 1 << (i % 64) != 0) {
                free_ok = false;
            }
            free_bytes += self.geo.end() - bump;
        } else {
            free_ok = false;
        }
        Survey {
            live,
            cuts,
            free_bytes,
            free_ok,
        }
    }

    /// Rebuilds everything but the chains from what the buckets reach, under the lock the
    /// caller holds: chains that go wrong are cut where they do, every block no chain reaches
    /// is free again (adjacent free blocks coalesced), the count recounted, `seq` made even.
    /// A writer killed at any step of a rebuild leaves the next one the same job.
    pub(crate) fn rebuild(&self) -> Repair {
        let h = self.header();
        let before = self.survey();
        for &link in &before.cuts {
            self.word(link).store(0, Ordering::Release);
            step();
        }
        let used: u64 = before.live.iter().map(|&(_, s)| s).sum();
        let leaked = if before.free_ok {
            self.geo.arena_len - used - before.free_bytes
        } else {
            0
        };
        self.hand_back();
        for f in &h.free {
            f.store(0, Ordering::Relaxed);
        }
        step();
        let mut live = before.live;
        live.sort_unstable();
        let mut at = self.geo.arena;
        for &(start, size) in &live {
            self.carve(at, start);
            at = start + size;
        }
        h.bump.store(at, Ordering::Relaxed);
        step();
        let entries = live.len() as u64;
        h.len.store(entries, Ordering::Relaxed);
        step();
        Repair {
            entries,
            reclaimed_bytes: leaked,
            dropped: before.cuts.len() as u64,
            free_lists_rebuilt: !before.free_ok,
        }
    }

    /// Puts [from, to) on the free lists as the fewest blocks.
    fn carve(&self, mut from: u64, to: u64) {
        while from < to {
            let gap = to - from;
            let class = ((63 - gap.leading_zeros() - MIN_CLASS) as usize).min(self.geo.max_class());
            self.push(from, class);
            from += class_size(class);
        }
    }

    /// Space usage under the lock the caller holds (`Err` if the structure is broken).
    pub(crate) fn stats(&self) -> Result<DictStats, Broken> {
        let s = self.survey();
        let used = s.live.iter().map(|&(_, n)| n).sum::<u64>();
        // Bytes neither in an entry nor free: only a scribbled word (a record's size class)
        // can make them outside a writer's death, which the lock reports first.
        if !s.cuts.is_empty() || !s.free_ok || used + s.free_bytes != self.geo.arena_len {
            return Err(Broken);
        }
        Ok(DictStats {
            entries: s.live.len() as u64,
            used_bytes: used,
            free_bytes: s.free_bytes,
            arena_bytes: self.geo.arena_len,
            repairs: self.header().repairs.load(Ordering::Relaxed),
        })
    }

    /// Copies every entry's key and value bytes, under the lock the caller holds.
    pub(crate) fn entries(&self) -> Result<Vec<ByteEntry>, Broken> {
        let mut out = Vec::with_capacity(self.len().min(1 << 20) as usize);
        for b in 0..self.geo.buckets {
            let mut link = HEADER_BYTES + b * 8;
            for _ in 0..=self.geo.blocks() {
                let at = self.word(link).load(Ordering::Acquire);
                if at == 0 {
                    break;
                }
                let r = self.record(at).ok_or(Broken)?;
                let (k, v) = r.lens().ok_or(Broken)?;
                let mut key = vec![0; k as usize];
                let mut value = vec![0; v as usize];
                // SAFETY: key + value lie inside the arena (`lens`); atomic loads.
                unsafe {
                    mproc_segment::atomic_copy::load(r.body, &mut key);
                    mproc_segment::atomic_copy::load(r.body.add(k as usize), &mut value);
                }
                out.push((key, value));
                link = at + 8;
            }
            if self.word(link).load(Ordering::Acquire) != 0 {
                return Err(Broken);
            }
        }
        Ok(out)
    }
}

/// Why [`Map::set`] did not write.
#[derive(Debug)]
pub(crate) enum SetError {
    TooLarge,
    Full,
    Broken,
    Corrupt(Repair),
}
