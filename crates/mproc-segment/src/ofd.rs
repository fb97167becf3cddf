//! Open-file-description byte-range locks (`F_OFD_SETLK`, `F_OFD_GETLK`): the kernel's own
//! record of who holds a file, dropped when the last descriptor of the holder's open file
//! description closes — however its process ends, in whatever pid namespace. Segments use
//! byte 0 as their in-use mark; the liveness roll uses one byte per peer and thread.
//!
//! Raw `libc::fcntl`, written once here: rustix's `fcntl_lock` takes the whole file, and
//! these locks are ranges. The descriptors are raw because the roll's live in statics that a
//! fork handler closes.

use std::os::fd::RawFd;

use rustix::io::Errno;

/// What to do to a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// A shared lock.
    Read,
    /// An exclusive lock.
    Write,
    /// Release.
    Unlock,
}

fn flock(kind: Lock, start: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is plain integers; all zeros is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = match kind {
        Lock::Read => libc::F_RDLCK,
        Lock::Write => libc::F_WRLCK,
        Lock::Unlock => libc::F_UNLCK,
    } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// `F_OFD_SETLK`: takes (or releases) `len` bytes at `start` without waiting; `AGAIN` or
/// `ACCESS` if another open file description holds a conflicting lock.
pub(crate) fn set(fd: RawFd, kind: Lock, start: u64, len: u64) -> Result<(), Errno> {
    let fl = flock(kind, start, len);
    // SAFETY: F_OFD_SETLK reads the `flock` we pass by pointer, which lives across the call;
    // a bad descriptor is an error (EBADF), not undefined behaviour.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        Ok(())
    } else {
        Err(crate::errno_of(&std::io::Error::last_os_error()))
    }
}

/// `F_OFD_GETLK` for an exclusive lock on `len` bytes at `start`: `Some(true)` if another
/// open file description holds any lock there, `None` if the kernel could not be asked.
pub(crate) fn held_elsewhere(fd: RawFd, start: u64, len: u64) -> Option<bool> {
    let mut fl = flock(Lock::Write, start, len);
    // SAFETY: F_OFD_GETLK reads and writes the `flock` we pass, which lives across the call.
    let r = unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut fl) };
    (r == 0).then_some(i32::from(fl.l_type) != libc::F_UNLCK)
}
