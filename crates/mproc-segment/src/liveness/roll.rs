//! The roll file and its open-file-description locks: opening a roll safely (never another
//! user's, never through a link), taking, releasing and asking about byte-range locks, and
//! drawing random tokens. Everything here is a system call wrapped once; the policy (which
//! byte means whom, registration, fork) is in the parent module.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::fs::{FileType, Mode, OFlags, fstat};
use rustix::io::Errno;

use super::{PEER_MASK, UNKNOWN};
use crate::SegmentError;

/// The roll of the calling process's effective user.
pub fn roll_path() -> String {
    roll_path_of(rustix::process::geteuid().as_raw())
}

/// The roll of user `uid`.
pub fn roll_path_of(uid: u32) -> String {
    format!("{}/.mproc-roll-{uid}", crate::SHM_DIR)
}

pub(super) fn roll_error(reason: &'static str) -> SegmentError {
    SegmentError::Liveness { reason }
}

/// Opens a roll: `own` creates it if missing and opens it for writing; the file must be a
/// regular file of the calling user, writable by nobody else.
pub(super) fn open_roll(path: &str, own: bool) -> Result<RawFd, SegmentError> {
    let mut flags = OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    flags |= if own {
        OFlags::RDWR | OFlags::CREATE
    } else {
        OFlags::RDONLY
    };
    let fd = rustix::fs::open(path, flags, Mode::from_bits_truncate(0o600)).map_err(|e| {
        if e == Errno::LOOP {
            roll_error("the roll is a symbolic link")
        } else {
            SegmentError::io("open of the liveness roll", e)
        }
    })?;
    let st = fstat(&fd).map_err(|e| SegmentError::io("fstat", e))?;
    let me = rustix::process::geteuid().as_raw();
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(roll_error("the roll is not a regular file"));
    }
    if own && (st.st_uid != me || st.st_mode & 0o022 != 0) {
        return Err(roll_error(
            "the roll belongs to another user or others may write it (planted?)",
        ));
    }
    // Made under a umask that took the owner's write bit: later processes of this user
    // could not take their write locks. Ours: put the mode right.
    if own && st.st_mode & 0o600 != 0o600 {
        rustix::fs::fchmod(&fd, Mode::from_bits_truncate(0o600))
            .map_err(|e| SegmentError::io("fchmod of the liveness roll", e))?;
    }
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

pub(super) fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `fd` is open for the duration of this call (owned by the caller).
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fstat(b).ok().map(|s| (s.st_dev, s.st_ino))
}

/// A roll opened only to ask about its peers (tools reading other users' segments).
#[derive(Debug)]
pub struct Roll {
    fd: std::os::fd::OwnedFd,
}

impl Roll {
    /// Opens user `uid`'s roll for asking; `None` if it does not exist (then nobody of that
    /// user is registered) or cannot be opened.
    pub fn of_user(uid: u32) -> Result<Option<Roll>, SegmentError> {
        match rustix::fs::open(
            roll_path_of(uid).as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|e| SegmentError::io("fstat", e))?;
                let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
                if !regular || st.st_uid != uid {
                    return Err(roll_error("the roll is not a regular file of its user"));
                }
                Ok(Some(Roll { fd }))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(SegmentError::io("open of the liveness roll", e)),
        }
    }

    /// Whether the peer with this token is alive (`None`: the kernel could not be asked).
    pub fn peer_alive(&self, peer: u32) -> Option<bool> {
        let peer = peer & PEER_MASK;
        if peer == 0 {
            return Some(false);
        }
        if peer == UNKNOWN {
            return Some(true);
        }
        use std::os::fd::AsRawFd;
        crate::ofd::held_elsewhere(self.fd.as_raw_fd(), u64::from(peer) << 32, 1)
    }
}

pub(super) fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closes a descriptor this module opened and nobody else uses.
        unsafe { libc::close(fd) };
    }
}

pub(super) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(4) = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty()) {
        return u32::from_ne_bytes(b);
    }
    // No getrandom: mix the clock, the pid and a counter (uniqueness is checked anyway).
    static MIX: AtomicU32 = AtomicU32::new(0x9e37_79b9);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let x = t
        ^ u64::from(std::process::id()) << 32
        ^ u64::from(MIX.fetch_add(0x9e37_79b9, Ordering::Relaxed));
    (x ^ x >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9) as u32
}
