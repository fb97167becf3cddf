//! `Segment`: one mapping of a POSIX shared-memory object or memfd, with its header.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use memmap2::MmapRaw;
use rustix::fs::fstat;
use rustix::io::Errno;
use rustix::shm::unlink as shm_unlink;

use crate::atomic_copy;
use crate::header::{RawHeader, STATE_READY};
use crate::{Header, Kind, SegmentError, SegmentOptions, ShmSafe};

/// A mapped shared-memory segment: a POSIX shared-memory object (named, in `/dev/shm`), an
/// anonymous `memfd`, or a foreign object opened with [`Segment::open_raw`].
///
/// The segment's payload is a run of bytes that every attached process sees at its own
/// address; structures placed in it must hold offsets, never pointers.
///
/// **Ownership.** The process that created a named segment unlinks its name when the `Segment`
/// is dropped (also while unwinding from a panic), unless [`persist`](Segment::persist) was
/// called. Processes that opened it, and children that inherited it through `fork`, never
/// unlink. An anonymous segment has no name; its memory is freed when the last process that
/// maps it or holds its fd is gone.
///
/// ```
/// use mproc_segment::Segment;
/// let name = format!("mproc-doc-segment-{}", std::process::id());
/// let a = Segment::create(&name, 4096)?;
/// a.write_bytes(0, b"hello")?;
/// let b = Segment::open(&name)?;          // another process would do the same
/// let mut buf = [0u8; 5];
/// b.read_bytes(0, &mut buf)?;
/// assert_eq!(&buf, b"hello");
/// drop(b);
/// drop(a);                                // the creator unlinks the name
/// assert!(Segment::open(&name).is_err());
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct Segment {
    pub(crate) map: MmapRaw,
    pub(crate) fd: OwnedFd,
    /// The `shm_open` form of the name (`/name`), `None` for anonymous segments.
    pub(crate) name: Option<String>,
    /// `None` for foreign segments opened raw.
    pub(crate) header: Option<Header>,
    pub(crate) payload_offset: usize,
    pub(crate) payload_len: usize,
    /// The creator's pid while it is responsible for unlinking the name.
    pub(crate) unlink_on_drop: Option<u32>,
}

impl Segment {
    /// Creates a named segment of `len` payload bytes, zero-filled, mode 0600.
    pub fn create(name: &str, len: usize) -> Result<Segment, SegmentError> {
        SegmentOptions::new(Kind::RAW).payload_len(len).create(name)
    }

    /// Opens an existing mproc segment by name, of any kind (see [`Segment::open_for`] for a
    /// type-checked open and [`Segment::open_raw`] for segments not made by mproc).
    pub fn open(name: &str) -> Result<Segment, SegmentError> {
        SegmentOptions::any().open(name)
    }

    /// Opens the named raw segment, or creates it with `len` payload bytes.
    pub fn open_or_create(name: &str, len: usize) -> Result<Segment, SegmentError> {
        SegmentOptions::new(Kind::RAW)
            .payload_len(len)
            .open_or_create(name)
    }

    /// Creates an anonymous (memfd) segment of `len` payload bytes.
    pub fn anonymous(len: usize) -> Result<Segment, SegmentError> {
        SegmentOptions::new(Kind::RAW).payload_len(len).anonymous()
    }

    /// Creates a named segment of `kind` holding `capacity` elements of `T`, with the payload
    /// aligned for `T`.
    pub fn create_for<T>(name: &str, kind: Kind, capacity: u64) -> Result<Segment, SegmentError> {
        SegmentOptions::new(kind)
            .element::<T>()
            .capacity(capacity)
            .create(name)
    }

    /// Opens a named segment, requiring `kind` and element type `T`.
    pub fn open_for<T>(name: &str, kind: Kind) -> Result<Segment, SegmentError> {
        SegmentOptions::new(kind).element::<T>().open(name)
    }

    /// Opens a shared-memory object that mproc did not make (for example one made by Python's
    /// `multiprocessing.shared_memory.SharedMemory`): no header, the payload is the whole file.
    pub fn open_raw(name: &str) -> Result<Segment, SegmentError> {
        SegmentOptions::any().open_raw(name)
    }

    /// Removes a name from `/dev/shm`. Processes that have the segment mapped keep it until
    /// they drop it.
    pub fn unlink(name: &str) -> Result<(), SegmentError> {
        let shm_name = crate::validate_name(name)?;
        shm_unlink(shm_name.as_str())
            .map_err(|e| SegmentError::from_open_errno("shm_unlink", name, e))
    }

    /// Keeps the name in `/dev/shm` after this (creating) handle is dropped; someone must then
    /// [`unlink`](Segment::unlink) it.
    pub fn persist(&mut self) {
        self.unlink_on_drop = None;
    }

    /// The segment's name as you pass it to `open` (without the leading `/` that
    /// `shm_open` adds), `None` if anonymous.
    ///
    /// ```
    /// use mproc_segment::Segment;
    /// let name = format!("mproc-doc-name-{}", std::process::id());
    /// let seg = Segment::create(&name, 64)?;
    /// assert_eq!(seg.name(), Some(name.as_str()));
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name
            .as_deref()
            .map(|n| n.strip_prefix('/').unwrap_or(n))
    }

    /// The validated header, `None` for a foreign segment opened with `open_raw`.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        self.payload_len
    }

    /// Whether the payload is empty (never true for segments mproc creates).
    pub fn is_empty(&self) -> bool {
        self.payload_len == 0
    }

    /// Offset of the payload from the start of the mapping (256 for mproc segments with
    /// element alignment up to 256, 0 for raw ones).
    pub fn payload_offset(&self) -> usize {
        self.payload_offset
    }

    /// Reserves the pages of payload bytes `offset .. offset + len` in the shared-memory
    /// filesystem, so that touching them can never raise SIGBUS for want of room: for an
    /// object created with [`SegmentOptions::reserve_upfront`](crate::SegmentOptions::reserve_upfront),
    /// call it before the first touch of a byte past what was reserved. Reserving again what
    /// is reserved does nothing. A range past the payload is refused with `InvalidSize`;
    /// a full `/dev/shm` (or its size limit, or a memory cgroup's) is `OutOfSpace`. Anonymous
    /// segments need no reservation (their pages cannot run out of room); reserving their
    /// pages allocates them.
    ///
    /// ```
    /// use mproc_segment::{Kind, SegmentOptions};
    /// let name = format!("doc-reserve-{}", std::process::id());
    /// let seg = SegmentOptions::new(Kind::RAW)
    ///     .payload_len(1 << 20)
    ///     .reserve_upfront(4096)
    ///     .create(&name)?;
    /// seg.reserve(4096, 64 << 10)?;                  // before writing those bytes
    /// assert!(seg.reserve(1 << 20, 1).is_err());     // past the payload
    /// # Ok::<(), mproc_segment::SegmentError>(())
    /// ```
    pub fn reserve(&self, offset: usize, len: usize) -> Result<(), SegmentError> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.payload_len)
            .ok_or(SegmentError::InvalidSize {
                reason: "reserved range past the payload",
            })?;
        let start = (self.payload_offset + offset) as u64;
        reserve_range(&self.fd, start, (end - offset) as u64).map_err(|e| match e {
            Errno::NOSPC | Errno::NOMEM | Errno::FBIG | Errno::DQUOT => SegmentError::OutOfSpace {
                requested: len as u64,
            },
            e => SegmentError::io("fallocate", e),
        })
    }

    /// Pointer to the first payload byte, valid for [`len`](Segment::len) bytes while `self`
    /// lives. Other processes may read and write this memory at any time.
    pub fn as_ptr(&self) -> *mut u8 {
        // `payload_offset <= map.len()` was checked when the segment was created or opened.
        self.map.as_mut_ptr().wrapping_add(self.payload_offset)
    }

    /// A shared reference to the `S` at byte `offset` of the payload, after checking bounds
    /// and alignment.
    pub fn view<S: ShmSafe>(&self, offset: usize) -> Result<&S, SegmentError> {
        let ptr = self.checked_ptr::<S>(offset, 1)?;
        // SAFETY: `checked_ptr` proved the `S` lies inside the live mapping and is aligned;
        // `S: ShmSafe` is valid for any bit pattern and only mutated atomically, so a shared
        // reference to it is sound while other processes access it.
        Ok(unsafe { &*ptr })
    }

    /// A shared slice of `count` values of `S` starting at byte `offset` of the payload.
    pub fn view_slice<S: ShmSafe>(
        &self,
        offset: usize,
        count: usize,
    ) -> Result<&[S], SegmentError> {
        let ptr = self.checked_ptr::<S>(offset, count)?;
        // SAFETY: as in `view`, for `count` consecutive values, all inside the mapping.
        Ok(unsafe { std::slice::from_raw_parts(ptr, count) })
    }

    fn checked_ptr<S>(&self, offset: usize, count: usize) -> Result<*const S, SegmentError> {
        let size = std::mem::size_of::<S>();
        let align = std::mem::align_of::<S>();
        let len = size.checked_mul(count);
        let fits = len
            .and_then(|l| offset.checked_add(l))
            .is_some_and(|end| end <= self.payload_len);
        let ptr = self.as_ptr().wrapping_add(offset);
        if !fits || (ptr as usize) % align != 0 {
            return Err(SegmentError::OutOfBounds {
                offset,
                len: len.unwrap_or(usize::MAX),
                align,
                payload: self.payload_len,
            });
        }
        Ok(ptr.cast())
    }

    /// Copies `buf.len()` payload bytes starting at `offset` into `buf`. Every byte is read
    /// atomically (relaxed; 8 at a time where aligned), so the copy may run while other
    /// processes, or atomic views of the same bytes, write them: it is then torn, but never
    /// a data race and never out of bounds.
    pub fn read_bytes(&self, offset: usize, buf: &mut [u8]) -> Result<(), SegmentError> {
        let src = self.checked_ptr::<u8>(offset, buf.len())?;
        // SAFETY: `src..src+len` lies inside the mapping (checked), which lives as long as
        // `self`; it is only accessed atomically here.
        unsafe { atomic_copy::load(src, buf) };
        Ok(())
    }

    /// Copies `data` into the payload at `offset`, every byte written atomically (relaxed; 8
    /// at a time where aligned), so it may race with other writers and atomic views without
    /// being a data race (readers may see a mix of old and new bytes).
    pub fn write_bytes(&self, offset: usize, data: &[u8]) -> Result<(), SegmentError> {
        let dst = self.checked_ptr::<u8>(offset, data.len())?;
        // SAFETY: `dst..dst+len` lies inside the mapping (checked), which lives as long as
        // `self`; it is only accessed atomically here.
        unsafe { atomic_copy::store(dst, data) };
        Ok(())
    }

    /// A duplicate of the segment's fd without close-on-exec, for handing an anonymous
    /// segment to a child through `exec`: pass its number to the child (an argument or an
    /// environment variable), spawn the child, then drop the returned fd. The child attaches
    /// with [`SegmentOptions::from_fd`].
    pub fn inheritable_fd(&self) -> Result<OwnedFd, SegmentError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| SegmentError::io("dup", crate::errno_of(&e)))?;
        rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())
            .map_err(|e| SegmentError::io("fcntl", e))?;
        Ok(fd)
    }

    /// Marks the segment ready: openers waiting in `attach` may now read the header.
    pub(crate) fn publish(&self) {
        let raw = self.map.as_ptr().cast::<RawHeader>();
        // SAFETY: the mapping holds a RawHeader at offset 0 (written in `build`); `state` is
        // atomic.
        let state = unsafe { &(*raw).state };
        // SYNC POINT: pairs with the Acquire load in `SegmentOptions::attach`.
        state.store(STATE_READY, Ordering::Release);
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Segment {
    /// Removes the name now, as dropping this creating handle would: only in the creating
    /// process, only if the name was not [`persist`](Segment::persist)ed, and only if it
    /// still refers to this segment (not to a newer one made under the same name). The
    /// mapping stays valid; peers that have it mapped keep it.
    ///
    /// ```
    /// use mproc_segment::Segment;
    /// let name = format!("mproc-doc-unlink-now-{}", std::process::id());
    /// let seg = Segment::create(&name, 64).unwrap();
    /// seg.unlink_now();
    /// assert!(Segment::open(&name).is_err());
    /// // The mapping is still there.
    /// seg.write_bytes(0, b"still mapped").unwrap();
    /// ```
    pub fn unlink_now(&self) {
        let (Some(pid), Some(name)) = (self.unlink_on_drop, &self.name) else {
            return;
        };
        // A forked child inherits this value but is not the creator.
        if pid != crate::current_pid() {
            return;
        }
        // Unlink only if the name still refers to our object: someone may have unlinked it and
        // created a new segment of the same name since. (glibc keeps POSIX shared memory in
        // /dev/shm; one stat of that path is cheaper than shm_open + fstat + close.)
        let ours = fstat(&self.fd).ok();
        let theirs = std::fs::metadata(crate::shm_dir::path_of(name)).ok();
        if let (Some(a), Some(b)) = (ours, theirs) {
            use std::os::unix::fs::MetadataExt;
            if a.st_ino == b.ino() && a.st_dev == b.dev() {
                let _ = shm_unlink(name.as_str());
            }
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.unlink_now();
    }
}

/// What a typed shared object (a queue, an array, a lock, ...) tells about the segment it
/// lives in: its name, header, length and file descriptor — and nothing that reads or writes
/// the payload. The object itself accesses those bytes with its own protocol (some of it
/// non-atomic, under a claim); a `&Segment` handed out beside it would let safe code race
/// with that (`write_bytes` over a slot being filled is a data race), so the objects give
/// this view instead, and `unsafe fn raw_segment` to code that takes that responsibility.
///
/// ```
/// use std::os::fd::AsFd;
/// let q = mproc_segment::SegmentOptions::any();
/// let seg = mproc_segment::Segment::anonymous(64)?;
/// let info = mproc_segment::SegmentInfo::of(&seg);
/// assert_eq!((info.name(), info.len()), (None, 64));
/// let _fd = info.as_fd();
/// # let _ = q;
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SegmentInfo<'a>(&'a Segment);

impl<'a> SegmentInfo<'a> {
    /// The metadata view of `seg`.
    pub fn of(seg: &'a Segment) -> SegmentInfo<'a> {
        SegmentInfo(seg)
    }

    /// The name as `open` takes it, `None` if anonymous (see [`Segment::name`]).
    pub fn name(&self) -> Option<&'a str> {
        self.0.name()
    }

    /// The validated header (see [`Segment::header`]).
    pub fn header(&self) -> Option<&'a Header> {
        self.0.header()
    }

    /// Length of the payload in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Offset of the payload from the start of the object (see
    /// [`Segment::payload_offset`]).
    pub fn payload_offset(&self) -> usize {
        self.0.payload_offset()
    }

    /// A duplicate of the descriptor without close-on-exec (see
    /// [`Segment::inheritable_fd`]).
    pub fn inheritable_fd(&self) -> Result<OwnedFd, SegmentError> {
        self.0.inheritable_fd()
    }
}

impl AsFd for SegmentInfo<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Reserves file bytes `start .. start + len` (`fallocate`, extending the file if needed); on a
/// filesystem without `fallocate`, only extends the file (as glibc's `posix_fallocate` would
/// not: it writes zeros; tmpfs has had `fallocate` since Linux 3.5, so this is for the exotic).
pub(crate) fn reserve_range(fd: &OwnedFd, start: u64, len: u64) -> Result<(), Errno> {
    if len == 0 {
        return Ok(());
    }
    let reserved = loop {
        // A signal may interrupt the reservation of a large range: it is simply done again.
        match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), start, len) {
            Err(Errno::INTR) => continue,
            r => break r,
        }
    };
    match reserved {
        Err(Errno::OPNOTSUPP) => {
            let size = rustix::fs::fstat(fd)?.st_size as u64;
            if size < start + len {
                rustix::fs::ftruncate(fd, start + len)?;
            }
            Ok(())
        }
        r => r,
    }
}
