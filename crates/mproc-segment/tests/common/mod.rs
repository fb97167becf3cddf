//! Helpers shared by the segment's integration tests.
#![allow(dead_code)] // each test file uses some of them

use std::os::fd::OwnedFd;

use mproc_segment::{MAGIC, Segment};
use rustix::fs::{Mode, ftruncate};
use rustix::shm::OFlags;

/// A one-byte lock request at offset 0 (the type is set by the caller). Raw `flock`: the
/// open-file-description range locks segments use are not in rustix (its `fcntl_lock` takes
/// a process-owned lock on the whole file).
pub fn in_use_flock() -> libc::flock {
    libc::flock {
        l_type: libc::F_UNLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    }
}

/// Makes a foreign (non-mproc) object in /dev/shm holding `bytes`, like Python would.
pub fn foreign(name: &str, bytes: &[u8]) -> OwnedFd {
    let fd = rustix::shm::open(
        format!("/{name}").as_str(),
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    ftruncate(&fd, bytes.len() as u64).unwrap();
    if !bytes.is_empty() {
        let seg = Segment::open_raw(name).unwrap();
        seg.write_bytes(0, bytes).unwrap();
    }
    fd
}

/// Removes a name when the test ends, however it ends.
pub struct Cleanup(pub String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

/// A header's first words: the magic, then `state` and `pid`.
pub fn header_bytes(state: u32, pid: u32) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    b[0..8].copy_from_slice(&MAGIC.to_ne_bytes());
    b[8..12].copy_from_slice(&state.to_ne_bytes());
    b[12..16].copy_from_slice(&pid.to_ne_bytes());
    b
}
