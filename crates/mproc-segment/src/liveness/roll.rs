//! The roll file and its open-file-description locks: opening a roll safely (never another
//! user's, never through a link), taking, releasing and asking about byte-range locks, and
//! drawing random tokens. Everything here is a system call wrapped once; the policy (which
//! byte means whom, registration, fork) is in the parent module.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{PEER_MASK, UNKNOWN};
use crate::SegmentError;

/// The roll of the calling process's effective user.
pub fn roll_path() -> String {
    roll_path_of(nix::unistd::geteuid().as_raw())
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
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let mut flags = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    flags |= if own {
        OFlag::O_RDWR | OFlag::O_CREAT
    } else {
        OFlag::O_RDONLY
    };
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o600)).map_err(|e| {
        if e == nix::errno::Errno::ELOOP {
            roll_error("the roll is a symbolic link")
        } else {
            SegmentError::io("open of the liveness roll", e)
        }
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| SegmentError::io("fstat", e))?;
    let me = nix::unistd::geteuid().as_raw();
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
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
        nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| SegmentError::io("fchmod of the liveness roll", e))?;
    }
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

pub(super) fn file_id(fd: RawFd) -> Option<(u64, u64)> {
    // SAFETY: `fd` is open for the duration of this call (owned by the caller).
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    nix::sys::stat::fstat(b).ok().map(|s| (s.st_dev, s.st_ino))
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
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        match nix::fcntl::open(
            roll_path_of(uid).as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd).map_err(|e| SegmentError::io("fstat", e))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != uid {
                    return Err(roll_error("the roll is not a regular file of its user"));
                }
                Ok(Some(Roll { fd }))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
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
        get_lock(self.fd.as_raw_fd(), u64::from(peer) << 32)
    }
}

pub(super) fn flock(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is plain integers; all zeros is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// `F_OFD_SETLK` on `fd` (raw: the descriptors live in statics so the fork handler can close
/// them; nix's typed fcntl wants a borrowed descriptor, which we would have to forge anyway).
pub(super) fn set_lock(
    fd: RawFd,
    kind: libc::c_int,
    start: u64,
    len: u64,
) -> Result<(), nix::errno::Errno> {
    let fl = flock(kind, start, len);
    // SAFETY: F_OFD_SETLK reads the `flock` we pass by pointer, which lives across the call.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
    nix::errno::Errno::result(r).map(drop)
}

/// `F_OFD_GETLK` for a write lock on byte `at`: `Some(true)` if any other open file
/// description holds a lock there.
pub(super) fn get_lock(fd: RawFd, at: u64) -> Option<bool> {
    let mut fl = flock(libc::F_WRLCK, at, 1);
    // SAFETY: F_OFD_GETLK reads and writes the `flock` we pass, which lives across the call.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    (r == 0).then_some(i32::from(fl.l_type) != libc::F_UNLCK)
}

pub(super) fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: closes a descriptor this module opened and nobody else uses.
        unsafe { libc::close(fd) };
    }
}

pub(super) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
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
