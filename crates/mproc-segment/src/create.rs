//! Creating segments: named (built unnamed and published in one step, or by name where the
//! system cannot), anonymous (memfd), and the reservation, mapping and header every new
//! segment gets.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;

use memmap2::MmapOptions;
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags, fchmod, memfd_create};
use rustix::io::Errno;
use rustix::shm::unlink as shm_unlink;

use crate::header::{HEADER_LEN, MAGIC, RawHeader, STATE_INITIALIZING};
use crate::{FORMAT_VERSION, Header, ProcessId, Segment, SegmentError, SegmentOptions};

impl SegmentOptions {
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
    pub(crate) fn publish_reclaiming(
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
    pub(crate) fn build_unnamed<E: From<SegmentError>, I: FnOnce(&Segment) -> Result<(), E>>(
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
    pub(crate) fn create_unpublished(
        &self,
        name: &str,
    ) -> Result<(Segment, UnlinkGuard), SegmentError> {
        let shm_name = crate::validate_name(name)?;
        let (offset, payload_len, total) = self.sizes()?;
        let path = crate::shm_dir::path_of(&shm_name);
        // What glibc's `shm_open(O_CREAT | O_EXCL)` does.
        let excl = || {
            rustix::fs::open(
                path.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_bits_truncate(self.mode),
            )
        };
        let fd = match excl() {
            Err(Errno::EXIST) if self.reclaim_stale && crate::shm_dir::reclaim_stale(&shm_name) => {
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
        rustix::io::pwrite(&fd, &prefix, 0).map_err(|e| match e {
            Errno::NOSPC | Errno::DQUOT => SegmentError::OutOfSpace {
                requested: total as u64,
            },
            e => SegmentError::io("pwrite", e),
        })?;
        let seg = self.build(fd, Some(shm_name), offset, payload_len, total)?;
        Ok((seg, guard))
    }

    pub(crate) fn finish_create<E: From<SegmentError>>(
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
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| SegmentError::io("memfd_create", e))?;
        let seg = self.build(fd, None, offset, payload_len, total)?;
        // Its size is final: nobody who gets hold of the fd (a child, or a process that opens
        // /proc/PID/fd/N) can shrink it under a mapping (SIGBUS) or grow it.
        rustix::fs::fcntl_add_seals(&seg.fd, SealFlags::SHRINK | SealFlags::GROW)
            .map_err(|e| SegmentError::io("fcntl(F_ADD_SEALS)", e))?;
        init(&seg)?;
        seg.publish();
        Ok(seg)
    }

    /// Reserves the space, maps it and writes the header (state Initializing).
    pub(crate) fn build(
        &self,
        fd: OwnedFd,
        name: Option<String>,
        offset: usize,
        payload_len: usize,
        total: usize,
    ) -> Result<Segment, SegmentError> {
        let out_of_space = |e| match e {
            Errno::NOSPC | Errno::NOMEM | Errno::FBIG => SegmentError::OutOfSpace {
                requested: total as u64,
            },
            e => SegmentError::io("posix_fallocate", e),
        };
        if name.is_some() {
            // Reserve the pages now (every one, or the first `reserve` of the payload) so that
            // a full /dev/shm fails here and not with SIGBUS later. The file gets its whole
            // length first, in one call: an opener that sees a length sees all of it.
            let len = total as u64;
            let upfront = self
                .reserve
                .map_or(len, |r| (offset.saturating_add(r) as u64).min(len));
            if upfront < len {
                rustix::fs::ftruncate(&fd, len).map_err(out_of_space)?;
            }
            crate::segment::reserve_range(&fd, 0, upfront).map_err(out_of_space)?;
        } else {
            // A memfd lives on the kernel's internal tmpfs, which has no size limit: a page
            // first touched later cannot fail for want of space (only for want of memory,
            // which is the OOM killer's, as for any anonymous memory). So pages come as they
            // are used, and a large queue arena costs only what it holds.
            rustix::fs::ftruncate(&fd, total as u64).map_err(out_of_space)?;
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
}

/// What `build_unnamed` made.
pub(crate) enum Unnamed<I> {
    Built(Segment),
    /// No unnamed files here: `init` comes back for the by-name fallback.
    Unsupported(I),
}

/// Unlinks a half-made segment if creation fails before it is handed out.
pub(crate) struct UnlinkGuard(pub(crate) Option<String>);

impl Drop for UnlinkGuard {
    fn drop(&mut self) {
        if let Some(name) = self.0.take() {
            let _ = shm_unlink(name.as_str());
        }
    }
}
