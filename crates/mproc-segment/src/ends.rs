//! [`End`]: the two ends of a channel whose liveness the kernel keeps, the way it keeps a
//! pipe's. Each end holds an open-file-description lock on its own byte of a shared memfd,
//! through an open file description of its own. `fork` shares the description, so the lock
//! stays held while any process still has that end open, and it drops when the last copy is
//! closed, whatever ended the process (`kill -9` included) and in whatever pid namespace.
//! The other end asks the kernel (`F_OFD_GETLK`) whether it is still held: no pid, no
//! heartbeat, nothing in shared memory that a peer could forge.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, Mode, OFlags, memfd_create, open};

use crate::SegmentError;
use crate::ofd::{self, Lock};

/// One end of a two-ended channel (see the module docs). Dropping it closes this process's
/// copy; the end counts as closed once no process has a copy.
///
/// ```
/// use mproc_segment::End;
/// let (a, b) = End::pair()?;
/// assert!(a.peer_open());
/// drop(b);
/// assert!(!a.peer_open());
/// # Ok::<(), mproc_segment::SegmentError>(())
/// ```
#[derive(Debug)]
pub struct End {
    fd: OwnedFd,
    /// This end's byte (0 or 1); the peer's is the other one.
    side: u8,
}

impl End {
    /// A connected pair: both ends open, each seeing the other.
    pub fn pair() -> Result<(End, End), SegmentError> {
        let first = memfd_create(c"mproc-ends", MemfdFlags::CLOEXEC)
            .map_err(|e| SegmentError::io("memfd_create", e))?;
        // A second open file description of the same file: only opening it again makes one
        // (`dup` and `fork` share the first).
        let path = format!("/proc/self/fd/{}", first.as_raw_fd());
        let second = open(
            path.as_str(),
            OFlags::RDWR | OFlags::APPEND | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| SegmentError::io("open /proc/self/fd (a second description)", e))?;
        let a = End::hold(first, 0)?;
        let b = End::hold(second, 1)?;
        Ok((a, b))
    }

    fn hold(fd: OwnedFd, side: u8) -> Result<End, SegmentError> {
        ofd::set(fd.as_raw_fd(), Lock::Write, u64::from(side), 1)
            .map_err(|e| SegmentError::io("F_OFD_SETLK (an end's mark)", e))?;
        Ok(End { fd, side })
    }

    /// Takes back an end from its descriptor (passed to an `exec`ed child). Which side it is
    /// is a flag of its open file description (the second end's is opened `O_APPEND`); the
    /// end's mark is taken again, which fails if another description holds it.
    pub fn from_fd(fd: OwnedFd) -> Result<End, SegmentError> {
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| SegmentError::io("F_GETFL", e))?;
        let side = u8::from(flags.contains(OFlags::APPEND));
        End::hold(fd, side).map_err(|_| SegmentError::InvalidArgument {
            reason: "the descriptor is not an end of an mproc channel (its mark is held \
                     elsewhere)",
        })
    }

    /// Whether the other end is still open in some process, asked of the kernel. If the
    /// kernel cannot be asked, the peer is taken for open (a channel is never cut wrongly).
    pub fn peer_open(&self) -> bool {
        ofd::held_elsewhere(self.fd.as_raw_fd(), u64::from(1 - self.side), 1).unwrap_or(true)
    }

    /// Which end this is (0 or 1).
    pub fn side(&self) -> u8 {
        self.side
    }

    /// A copy of this end for another owner in this process (the same description: the end
    /// closes when both copies are gone).
    pub fn try_clone(&self) -> Result<End, SegmentError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| SegmentError::io("dup", crate::errno_of(&e)))?;
        Ok(End {
            fd,
            side: self.side,
        })
    }
}

impl AsFd for End {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_open_until_its_last_copy_closes() {
        let (a, b) = End::pair().unwrap();
        assert!(a.peer_open() && b.peer_open());
        let b2 = b.try_clone().unwrap();
        drop(b);
        assert!(a.peer_open(), "a copy is still open");
        drop(b2);
        assert!(!a.peer_open());
        assert!(a.try_clone().unwrap().side() == 0);
    }

    #[test]
    fn an_end_passed_by_descriptor_knows_its_side() {
        let (a, b) = End::pair().unwrap();
        let fd = b.fd.try_clone().unwrap();
        let again = End::from_fd(fd).unwrap();
        assert_eq!(again.side(), 1);
        assert!(again.peer_open());
        // The same side through another description: its mark is held.
        let path = format!("/proc/self/fd/{}", a.fd.as_raw_fd());
        let forged = open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()).unwrap();
        assert!(End::from_fd(forged).is_err());
        drop(a);
        assert!(!again.peer_open());
    }
}
