//! `Segment`: one mapping of a POSIX shared-memory object or memfd, with its header.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{Mode, fchmod, fstat};

use crate::header::{
    HEADER_LEN, HeaderFields, MAGIC, RawHeader, STATE_INITIALIZING, STATE_READY, payload_offset_for,
};
use crate::{FORMAT_VERSION, Header, Kind, ProcessId, SegmentError, ShmSafe, TypeTag};

/// How long `open` waits, by default, for a creator that is still initialising.
pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(2);

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
    map: MmapRaw,
    fd: OwnedFd,
    /// The `shm_open` form of the name (`/name`), `None` for anonymous segments.
    name: Option<String>,
    /// `None` for foreign segments opened raw.
    header: Option<Header>,
    payload_offset: usize,
    payload_len: usize,
    /// The creator's pid while it is responsible for unlinking the name.
    unlink_on_drop: Option<u32>,
}

/// How to create or open a segment: kind, element type, capacity, size, mode and timeout.
///
/// ```
/// use mproc_segment::{Kind, SegmentOptions};
/// let seg = SegmentOptions::new(Kind::ARRAY).element::<f64>().capacity(1000).anonymous()?;
/// assert_eq!(seg.len(), 8000);
/// assert_eq!(seg.payload_offset(), 256);
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    kind: Kind,
    element: TypeTag,
    capacity: u64,
    payload_len: Option<usize>,
    mode: u32,
    open_timeout: Duration,
    check_type: bool,
    allow_foreign: bool,
    reclaim_stale: bool,
}

impl SegmentOptions {
    /// Options for a segment of `kind` holding bytes; refine with the other methods.
    pub fn new(kind: Kind) -> SegmentOptions {
        SegmentOptions {
            kind,
            element: TypeTag::bytes(),
            capacity: 0,
            payload_len: None,
            mode: 0o600,
            open_timeout: DEFAULT_OPEN_TIMEOUT,
            check_type: true,
            allow_foreign: false,
            reclaim_stale: true,
        }
    }

    /// Options that open any mproc segment, whatever its kind and element type.
    pub fn any() -> SegmentOptions {
        SegmentOptions {
            check_type: false,
            ..SegmentOptions::new(Kind::RAW)
        }
    }

    /// The element type is `T`, fingerprinted by [`TypeTag::of`].
    pub fn element<T>(self) -> Self {
        self.type_tag(TypeTag::of::<T>())
    }

    /// The element type's fingerprint, for example [`TypeTag::named`].
    pub fn type_tag(mut self, tag: TypeTag) -> Self {
        self.element = tag;
        self
    }

    /// Number of elements (recorded in the header; the payload defaults to
    /// `capacity * size_of::<T>()` bytes).
    pub fn capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// Payload length in bytes, when it is not simply `capacity` elements.
    pub fn payload_len(mut self, len: usize) -> Self {
        self.payload_len = Some(len);
        self
    }

    /// File mode of a named segment (default `0o600`: only this user may open it). The umask
    /// does not apply: the mode is set exactly.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Lets `open` / `open_or_create` / `open_raw` accept an object that another user owns, or
    /// that group or others may write. By default such an object is refused with
    /// [`Untrusted`](SegmentError::Untrusted): whoever created it in advance could read
    /// everything written into it, change it, or truncate it under you.
    pub fn allow_foreign_owner(mut self) -> Self {
        self.allow_foreign = true;
        self
    }

    /// Makes `create` fail with [`AlreadyExists`](SegmentError::AlreadyExists) whenever the
    /// name exists. By default `create` (and `open_or_create`) first removes a *stale*
    /// segment of that name — this user's, whose creator is dead and that no live process
    /// maps, the rule `mproc gc` applies — so a service restarted after `kill -9` comes back
    /// without manual cleanup. Of creators racing for the same stale name exactly one
    /// creates; a live or mapped segment is never touched.
    pub fn fail_if_exists(mut self) -> Self {
        self.reclaim_stale = false;
        self
    }

    /// How long `open` waits for a creator still initialising (default 2 s).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// Creates a named segment (exclusively: an existing name is
    /// [`AlreadyExists`](SegmentError::AlreadyExists)).
    pub fn create(&self, name: &str) -> Result<Segment, SegmentError> {
        self.create_with(name, |_| Ok::<(), SegmentError>(()))
    }

    /// Creates a named segment and runs `init` on it before other processes may open it. The
    /// segment is built and initialised as an unnamed file and then given its name in one
    /// step (`O_TMPFILE` + `linkat`), so no process ever sees it half made; where the system
    /// cannot do that, it is created by name and openers wait for it to become ready. If
    /// `init` fails, nothing is left behind.
    pub fn create_with<E: From<SegmentError>>(
        &self,
        name: &str,
        init: impl FnOnce(&Segment) -> Result<(), E>,
    ) -> Result<Segment, E> {
        let shm_name = crate::validate_name(name)?;
        match self.build_unnamed(&shm_name, init)? {
            Unnamed::Built(mut seg) => {
                if self.publish_reclaiming(&seg, &shm_name, name)? {
                    seg.unlink_on_drop = Some(crate::current_pid());
                    return Ok(seg);
                }
                // No procfs to link through: create by name instead (init already ran on the
                // unnamed copy, which is dropped; run it again on the real one).
                let (seg2, guard) = self.create_unpublished(name)?;
                Self::finish_create(seg2, guard, |_| Ok::<(), E>(()))
            }
            Unnamed::Unsupported(init) => {
                let (seg, guard) = self.create_unpublished(name)?;
                Self::finish_create(seg, guard, init)
            }
        }
    }

    /// Gives the built segment its name; an existing stale segment of that name is removed
    /// first, unless [`fail_if_exists`](Self::fail_if_exists).
    fn publish_reclaiming(
        &self,
        seg: &Segment,
        shm_name: &str,
        name: &str,
    ) -> Result<bool, SegmentError> {
        for _ in 0..3 {
            match crate::shm_dir::publish(&seg.fd, shm_name, name) {
                Err(SegmentError::AlreadyExists { .. })
                    if self.reclaim_stale && crate::shm_dir::reclaim_stale(shm_name) => {}
                r => return r,
            }
        }
        Err(SegmentError::AlreadyExists { name: name.into() })
    }

    /// Builds an unnamed, initialised, ready segment (or hands `init` back if the system has
    /// no unnamed files).
    fn build_unnamed<E: From<SegmentError>, I: FnOnce(&Segment) -> Result<(), E>>(
        &self,
        shm_name: &str,
        init: I,
    ) -> Result<Unnamed<I>, E> {
        let Some(fd) = crate::shm_dir::unnamed(self.mode)? else {
            return Ok(Unnamed::Unsupported(init));
        };
        fchmod(&fd, Mode::from_bits_truncate(self.mode))
            .map_err(|e| SegmentError::io("fchmod", e))?;
        let (offset, payload_len, total) = self.sizes()?;
        let seg = self.build(fd, Some(shm_name.to_owned()), offset, payload_len, total)?;
        init(&seg)?;
        seg.publish();
        Ok(Unnamed::Built(seg))
    }

    /// Makes the named object, reserves its space and writes the header (Initializing). The
    /// guard unlinks the name unless `finish_create` succeeds. (The fallback where unnamed
    /// files are not available.)
    fn create_unpublished(&self, name: &str) -> Result<(Segment, UnlinkGuard), SegmentError> {
        let shm_name = crate::validate_name(name)?;
        let (offset, payload_len, total) = self.sizes()?;
        let excl = || {
            shm_open(
                shm_name.as_str(),
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
                Mode::from_bits_truncate(self.mode),
            )
        };
        let fd = match excl() {
            Err(Errno::EEXIST)
                if self.reclaim_stale && crate::shm_dir::reclaim_stale(&shm_name) =>
            {
                excl()
            }
            r => r,
        }
        .map_err(|e| SegmentError::from_open_errno("shm_open", name, e))?;
        // From here on, any failure must unlink the name we just made.
        let guard = UnlinkGuard(Some(shm_name.clone()));
        // In use from before its first byte: an opener that finds it half made and nobody
        // holding it knows its creator died.
        crate::liveness::register()?;
        crate::shm_dir::hold(&fd)?;
        fchmod(&fd, Mode::from_bits_truncate(self.mode))
            .map_err(|e| SegmentError::io("fchmod", e))?;
        // The magic and "initialising" go in before the file has any length, so an opener
        // never sees a non-empty file without them (it waits for an empty one).
        let mut prefix = [0u8; HEADER_LEN];
        prefix[..8].copy_from_slice(&MAGIC.to_ne_bytes());
        prefix[8..12].copy_from_slice(&STATE_INITIALIZING.to_ne_bytes());
        prefix[12..16].copy_from_slice(&crate::current_pid().to_ne_bytes());
        nix::sys::uio::pwrite(&fd, &prefix, 0).map_err(|e| match e {
            Errno::ENOSPC | Errno::EDQUOT => SegmentError::OutOfSpace {
                requested: total as u64,
            },
            e => SegmentError::io("pwrite", e),
        })?;
        let seg = self.build(fd, Some(shm_name), offset, payload_len, total)?;
        Ok((seg, guard))
    }

    fn finish_create<E: From<SegmentError>>(
        mut seg: Segment,
        mut guard: UnlinkGuard,
        init: impl FnOnce(&Segment) -> Result<(), E>,
    ) -> Result<Segment, E> {
        init(&seg)?;
        seg.publish();
        seg.unlink_on_drop = Some(crate::current_pid());
        guard.0 = None;
        Ok(seg)
    }

    /// Creates an anonymous segment on `memfd_create`: nothing appears in `/dev/shm`; children
    /// share it through `fork`, or through `exec` with [`Segment::inheritable_fd`].
    pub fn anonymous(&self) -> Result<Segment, SegmentError> {
        self.anonymous_with(|_| Ok::<(), SegmentError>(()))
    }

    /// Creates an anonymous segment and runs `init` on it before it is marked ready.
    pub fn anonymous_with<E: From<SegmentError>>(
        &self,
        init: impl FnOnce(&Segment) -> Result<(), E>,
    ) -> Result<Segment, E> {
        let (offset, payload_len, total) = self.sizes()?;
        let fd = memfd_create(
            c"mproc-anonymous",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| SegmentError::io("memfd_create", e))?;
        let seg = self.build(fd, None, offset, payload_len, total)?;
        // Its size is final: nobody who gets hold of the fd (a child, or a process that opens
        // /proc/PID/fd/N) can shrink it under a mapping (SIGBUS) or grow it.
        fcntl(
            &seg.fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .map_err(|e| SegmentError::io("fcntl(F_ADD_SEALS)", e))?;
        init(&seg)?;
        seg.publish();
        Ok(seg)
    }

    /// Opens a named segment, checking the kind and element type of these options (unless
    /// they came from [`SegmentOptions::any`]).
    pub fn open(&self, name: &str) -> Result<Segment, SegmentError> {
        let (shm_name, fd) = self.open_trusted(name)?;
        self.attach(fd, Some(shm_name))
    }

    /// Opens the named object (never through a symlink), applies the owner rules and marks
    /// it in use. An object removed by a reclaimer between our open and our in-use lock is
    /// dropped and the name opened again, so an opener never ends up on an unlinked file.
    fn open_trusted(&self, name: &str) -> Result<(String, OwnedFd), SegmentError> {
        let shm_name = crate::validate_name(name)?;
        let path = crate::shm_dir::path_of(&shm_name);
        crate::liveness::register()?;
        for _ in 0..16 {
            let fd = shm_open(
                shm_name.as_str(),
                OFlag::O_RDWR | OFlag::O_NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| SegmentError::from_open_errno("shm_open", name, e))?;
            crate::shm_dir::check_owner(&fd, name, self.allow_foreign)?;
            crate::shm_dir::hold(&fd)?;
            // SYNC POINT: a reclaimer unlinks only while holding the exclusive in-use lock,
            // which our shared lock now excludes: if the name still refers to our file, it
            // stays ours; if not, the file we hold is (or is being) removed.
            if crate::shm_dir::still_named(&fd, &path) {
                return Ok((shm_name, fd));
            }
        }
        Err(SegmentError::NotReady {
            creator_dead: false,
        })
    }

    /// Maps a named object that mproc did not make (no header: the whole object is the
    /// payload), such as one Python's `shared_memory` created. The owner rules of
    /// [`open`](Self::open) apply.
    pub fn open_raw(&self, name: &str) -> Result<Segment, SegmentError> {
        let (shm_name, fd) = self.open_trusted(name)?;
        let len = fstat(&fd)
            .map_err(|e| SegmentError::io("fstat", e))?
            .st_size as u64;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or(SegmentError::Truncated {
                expected: 1,
                found: len,
            })?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| SegmentError::io("mmap", crate::errno_of(&e)))?;
        Ok(Segment {
            map,
            fd,
            name: Some(shm_name),
            header: None,
            payload_offset: 0,
            payload_len: len,
            unlink_on_drop: None,
        })
    }

    /// Attaches to a segment through its file descriptor (an anonymous segment inherited
    /// across `exec`, or an fd received over a Unix socket), with the same checks as `open`.
    pub fn from_fd(&self, fd: OwnedFd) -> Result<Segment, SegmentError> {
        self.attach(fd, None)
    }

    /// Opens the named segment if it exists, or creates it (running `init`) if it does not.
    /// Returns the segment and whether this call created it. Of processes racing to create
    /// the same name exactly one creates it; the others open what it made.
    pub fn open_or_create_with<E: From<SegmentError>>(
        &self,
        name: &str,
        init: impl FnOnce(&Segment) -> Result<(), E>,
    ) -> Result<(Segment, bool), E> {
        let shm_name = crate::validate_name(name)?;
        match self.open(name) {
            Ok(seg) => return Ok((seg, false)),
            Err(SegmentError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut init = Some(init);
        let mut built = match self.build_unnamed(&shm_name, |seg: &Segment| match init.take() {
            Some(f) => f(seg),
            None => Ok(()),
        })? {
            Unnamed::Built(seg) => Some(seg),
            Unnamed::Unsupported(_) => None,
        };
        // Another process may unlink between our failed create and our open: retry a few times.
        for _ in 0..8 {
            match built.as_mut() {
                Some(seg) => match self.publish_reclaiming(seg, &shm_name, name) {
                    Ok(true) => {
                        let mut seg = built.take().ok_or(SegmentError::NotReady {
                            creator_dead: false,
                        })?;
                        seg.unlink_on_drop = Some(crate::current_pid());
                        return Ok((seg, true));
                    }
                    Ok(false) => built = None,
                    Err(SegmentError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                },
                None => match self.create_unpublished(name) {
                    Ok((seg, guard)) => {
                        let f = init.take();
                        return Self::finish_create(seg, guard, |s: &Segment| match f {
                            Some(f) => f(s),
                            None => Ok(()),
                        })
                        .map(|s| (s, true));
                    }
                    Err(SegmentError::AlreadyExists { .. }) => {}
                    Err(e) => return Err(e.into()),
                },
            }
            match self.open(name) {
                Ok(seg) => return Ok((seg, false)),
                Err(SegmentError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SegmentError::NotReady {
            creator_dead: false,
        }
        .into())
    }

    /// Opens the named segment, or creates it if it does not exist.
    pub fn open_or_create(&self, name: &str) -> Result<Segment, SegmentError> {
        self.open_or_create_with(name, |_| Ok::<(), SegmentError>(()))
            .map(|(seg, _)| seg)
    }

    /// (payload offset, payload length, total length), checked for overflow.
    fn sizes(&self) -> Result<(usize, usize, usize), SegmentError> {
        let align = self.element.align as usize;
        if !align.is_power_of_two() || align > 4096 {
            return Err(SegmentError::InvalidSize {
                reason: "element alignment must be a power of two of at most 4096",
            });
        }
        let payload_len = match self.payload_len {
            Some(len) => len,
            None => usize::try_from(self.capacity)
                .ok()
                .and_then(|c| c.checked_mul(self.element.size as usize))
                .ok_or(SegmentError::InvalidSize {
                    reason: "capacity * element size overflows",
                })?,
        };
        if payload_len == 0 {
            return Err(SegmentError::InvalidSize {
                reason: "the payload must not be empty",
            });
        }
        let offset = payload_offset_for(align);
        let total = offset
            .checked_add(payload_len)
            .filter(|&t| t <= i64::MAX as usize)
            .ok_or(SegmentError::InvalidSize {
                reason: "segment length overflows",
            })?;
        Ok((offset, payload_len, total))
    }

    /// Reserves the space, maps it and writes the header (state Initializing).
    fn build(
        &self,
        fd: OwnedFd,
        name: Option<String>,
        offset: usize,
        payload_len: usize,
        total: usize,
    ) -> Result<Segment, SegmentError> {
        let out_of_space = |e| match e {
            Errno::ENOSPC | Errno::ENOMEM | Errno::EFBIG => SegmentError::OutOfSpace {
                requested: total as u64,
            },
            e => SegmentError::io("posix_fallocate", e),
        };
        if name.is_some() {
            // Reserve every page now so that a full /dev/shm fails here and not with SIGBUS
            // later.
            nix::fcntl::posix_fallocate(&fd, 0, total as libc::off_t).map_err(out_of_space)?;
        } else {
            // A memfd lives on the kernel's internal tmpfs, which has no size limit: a page
            // first touched later cannot fail for want of space (only for want of memory,
            // which is the OOM killer's, as for any anonymous memory). So pages come as they
            // are used, and a large queue arena costs only what it holds.
            nix::unistd::ftruncate(&fd, total as libc::off_t).map_err(out_of_space)?;
        }
        let creator_peer = crate::liveness::register()?;
        crate::shm_dir::hold(&fd)?;
        let map = MmapOptions::new()
            .len(total)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| SegmentError::io("mmap", crate::errno_of(&e)))?;
        let creator = ProcessId::current();
        let header = Header {
            creator_peer,
            version: FORMAT_VERSION,
            kind: self.kind,
            element: self.element.clone(),
            capacity: self.capacity,
            payload_offset: offset as u64,
            payload_len: payload_len as u64,
            total_len: total as u64,
            creator,
        };
        let raw = map.as_mut_ptr().cast::<RawHeader>();
        // SAFETY: the mapping is `total >= HEADER_LEN` bytes, page-aligned (so aligned for
        // RawHeader), zero-filled by the kernel, and nobody else can read these fields until
        // `publish` stores Ready: the magic is not yet set, so an opener keeps waiting.
        unsafe {
            (*raw).magic.store(MAGIC, Ordering::Relaxed);
            (*raw).creator_pid.store(creator.pid, Ordering::Relaxed);
            (*raw).state.store(STATE_INITIALIZING, Ordering::Relaxed);
            std::ptr::write_volatile(&raw mut (*raw).fields, header.to_fields());
        }
        Ok(Segment {
            map,
            fd,
            name,
            header: Some(header),
            payload_offset: offset,
            payload_len,
            unlink_on_drop: None,
        })
    }

    /// Waits for Ready, snapshots and validates the header, and checks kind and type.
    fn attach(&self, fd: OwnedFd, name: Option<String>) -> Result<Segment, SegmentError> {
        crate::liveness::register()?;
        crate::shm_dir::hold(&fd)?;
        let deadline = Instant::now() + self.open_timeout;
        let mut wait = Wait::new(deadline);
        // The creator extends the file with one fallocate: length 0 means "not yet".
        let file_len = loop {
            let len = fstat(&fd)
                .map_err(|e| SegmentError::io("fstat", e))?
                .st_size as u64;
            if len > 0 {
                break len;
            }
            if !wait.pause() {
                return Err(SegmentError::NotReady {
                    creator_dead: false,
                });
            }
        };
        if file_len < HEADER_LEN as u64 {
            return Err(SegmentError::Truncated {
                expected: HEADER_LEN as u64,
                found: file_len,
            });
        }
        let map_len = usize::try_from(file_len).map_err(|_| SegmentError::InvalidSize {
            reason: "segment larger than the address space",
        })?;
        let map = MmapOptions::new()
            .len(map_len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| SegmentError::io("mmap", crate::errno_of(&e)))?;
        let raw = map.as_ptr().cast::<RawHeader>();
        // SAFETY: the mapping is at least HEADER_LEN bytes and page-aligned; the atomics are
        // valid for any bit pattern and are only accessed atomically here.
        let (magic_word, state_word, pid_word) =
            unsafe { (&(*raw).magic, &(*raw).state, &(*raw).creator_pid) };
        loop {
            let magic = magic_word.load(Ordering::Relaxed);
            // A creator writes the magic before the file has any length (or publishes it
            // complete): a non-empty file without it is not an mproc segment — refused at
            // once, never waited for.
            if magic != MAGIC {
                return Err(SegmentError::NotMproc { found: magic });
            }
            // SYNC POINT: pairs with the Release store of Ready in `Segment::publish`; after it
            // every header field and the creator's initialisation of the payload are visible.
            if magic == MAGIC && state_word.load(Ordering::Acquire) == STATE_READY {
                break;
            }
            // The creator holds the in-use lock from before it wrote the magic: nobody else
            // holding it means the creator died (asked of the kernel, in any namespace).
            if magic == MAGIC && crate::shm_dir::in_use(&fd) == Some(false) {
                // Re-check once: it may have become ready just before exiting.
                if state_word.load(Ordering::Acquire) == STATE_READY {
                    break;
                }
                return Err(SegmentError::NotReady { creator_dead: true });
            }
            if !wait.pause() {
                return Err(if magic == 0 {
                    SegmentError::NotMproc { found: 0 }
                } else {
                    SegmentError::NotReady {
                        creator_dead: false,
                    }
                });
            }
        }
        // SAFETY: the fields lie inside the mapping; they were written before Ready (see the
        // SYNC POINT above) and `HeaderFields` is plain integers, valid for any bit pattern. A
        // volatile copy takes one snapshot that later writes by peers cannot change under us.
        let fields: HeaderFields = unsafe { std::ptr::read_volatile(&raw const (*raw).fields) };
        let header = Header::from_fields(&fields, pid_word.load(Ordering::Relaxed), file_len)?;
        if self.check_type {
            if header.kind != self.kind {
                return Err(SegmentError::KindMismatch {
                    expected: self.kind,
                    found: header.kind,
                });
            }
            let e = &self.element;
            let f = &header.element;
            if e.hash() != f.hash() || e.size != f.size || e.align != f.align {
                return Err(SegmentError::TypeMismatch {
                    expected: e.to_string(),
                    found: f.to_string(),
                });
            }
        }
        Ok(Segment {
            map,
            fd,
            name,
            payload_offset: header.payload_offset as usize,
            payload_len: header.payload_len as usize,
            header: Some(header),
            unlink_on_drop: None,
        })
    }
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
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(|e| SegmentError::io("fcntl", e))?;
        Ok(fd)
    }

    /// Marks the segment ready: openers waiting in `attach` may now read the header.
    fn publish(&self) {
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

/// What `build_unnamed` made.
enum Unnamed<I> {
    Built(Segment),
    /// No unnamed files here: `init` comes back for the by-name fallback.
    Unsupported(I),
}

/// Unlinks a half-made segment if creation fails before it is handed out.
struct UnlinkGuard(Option<String>);

impl Drop for UnlinkGuard {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            let _ = shm_unlink(name.as_str());
        }
    }
}

/// Bounded polling while a creator initialises: a few yields, then sleeps growing to 1 ms.
/// Creation takes microseconds, so this only sleeps when a creator is slow or dead.
struct Wait {
    deadline: Instant,
    round: u32,
}

impl Wait {
    fn new(deadline: Instant) -> Wait {
        Wait { deadline, round: 0 }
    }

    /// Waits a little; false once the deadline has passed.
    fn pause(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        self.round += 1;
        if self.round < 16 {
            std::thread::yield_now();
        } else {
            let step = Duration::from_micros(50u64 << (self.round - 16).min(5));
            std::thread::sleep(step.min(self.deadline - now));
        }
        true
    }
}

/// Byte copies to and from shared memory made of relaxed atomic accesses: bytes up to the
/// first 8-aligned address one at a time, then 8 at a time, then the rest one at a time.
/// Plain `memcpy` would race (undefined behaviour) with any process or atomic view writing
/// the same bytes; these cannot.
mod atomic_copy {
    use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

    /// How many bytes from `addr` to the next multiple of 8, at most `len`.
    fn head(addr: usize, len: usize) -> usize {
        (addr.next_multiple_of(8) - addr).min(len)
    }

    /// Reads `out.len()` bytes at `src`.
    ///
    /// # Safety
    /// `src..src + out.len()` must be valid for reads for the duration of the call and be
    /// accessed by others only atomically or through these functions.
    pub unsafe fn load(src: *const u8, out: &mut [u8]) {
        let len = out.len();
        let h = head(src as usize, len);
        let words = (len - h) / 8;
        for (i, b) in out.iter_mut().enumerate().take(h) {
            // SAFETY: in bounds (caller); AtomicU8 has the alignment of u8.
            *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        }
        for w in 0..words {
            let at = h + 8 * w;
            // SAFETY: in bounds (caller); `src + at` is 8-aligned (past the head).
            let v = unsafe { AtomicU64::from_ptr(src.add(at).cast_mut().cast()) }
                .load(Ordering::Relaxed);
            out[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        }
        for (i, b) in out.iter_mut().enumerate().skip(h + 8 * words) {
            // SAFETY: as for the head.
            *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Ordering::Relaxed);
        }
    }

    /// Writes `data` at `dst`.
    ///
    /// # Safety
    /// `dst..dst + data.len()` must be valid for writes for the duration of the call and be
    /// accessed by others only atomically or through these functions.
    pub unsafe fn store(dst: *const u8, data: &[u8]) {
        let len = data.len();
        let h = head(dst as usize, len);
        let words = (len - h) / 8;
        for (i, &b) in data.iter().enumerate().take(h) {
            // SAFETY: in bounds (caller); AtomicU8 has the alignment of u8.
            unsafe { AtomicU8::from_ptr(dst.add(i).cast_mut()) }.store(b, Ordering::Relaxed);
        }
        for w in 0..words {
            let at = h + 8 * w;
            let mut word = [0u8; 8];
            word.copy_from_slice(&data[at..at + 8]);
            // SAFETY: in bounds (caller); `dst + at` is 8-aligned (past the head).
            unsafe { AtomicU64::from_ptr(dst.add(at).cast_mut().cast()) }
                .store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
        for (i, &b) in data.iter().enumerate().skip(h + 8 * words) {
            // SAFETY: as for the head.
            unsafe { AtomicU8::from_ptr(dst.add(i).cast_mut()) }.store(b, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn copies_every_length_at_every_alignment() {
            let mut mem = vec![0u64; 16];
            let base = mem.as_mut_ptr().cast::<u8>();
            for start in 0..9 {
                for len in 0..60 {
                    let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7) + 1).collect();
                    // SAFETY: start + len <= 69 < 128 bytes of `mem`, used only here.
                    unsafe { super::store(base.add(start), &data) };
                    let mut back = vec![0u8; len];
                    // SAFETY: as above.
                    unsafe { super::load(base.add(start), &mut back) };
                    assert_eq!(back, data, "start {start} len {len}");
                }
            }
        }
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
