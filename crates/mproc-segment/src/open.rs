//! Opening segments: by name (owner rules, the in-use lock, a name re-checked against
//! reclaim), raw, from a descriptor, or open-or-create; and `attach`, which waits for a
//! creator, snapshots the header once and checks kind and type.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::MmapOptions;
use rustix::fs::{Mode, OFlags, fstat};

use crate::create::Unnamed;
use crate::header::{HEADER_LEN, HeaderFields, MAGIC, RawHeader, STATE_READY};
use crate::{Header, Segment, SegmentError, SegmentOptions};

impl SegmentOptions {
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
            // What glibc's `shm_open` does, with `O_NOFOLLOW` ours to give.
            let fd = rustix::fs::open(
                path.as_str(),
                OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC,
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

    /// Waits for Ready, snapshots and validates the header, and checks kind and type.
    pub(crate) fn attach(
        &self,
        fd: OwnedFd,
        name: Option<String>,
    ) -> Result<Segment, SegmentError> {
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
