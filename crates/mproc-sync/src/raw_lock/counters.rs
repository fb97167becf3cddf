//! What tools read of a lock: its holder and counters, from the lock itself or from a copy of
//! its bytes.

#[cfg(not(loom))]
use super::{PEER_MASK, RawLock};

/// What [`RawLock::counters`] reports: the holder and the counters since the lock was made.
///
/// ```
/// use mproc_sync::RawLock;
/// let l = RawLock::new(false);
/// drop(l.lock().unwrap());
/// let c = l.counters();
/// assert_eq!((c.holder, c.acquisitions, c.owner_deaths), (None, 1, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockCounters {
    /// The holder's peer token (its process's, see `mproc_segment::liveness`), if held.
    pub holder: Option<u32>,
    /// Acquisitions since the lock was made (re-entries of an `RLock` not counted).
    pub acquisitions: u64,
    /// Lockers that found it held and had to wait.
    pub contentions: u32,
    /// Take-overs from a holder that died.
    pub owner_deaths: u32,
}

#[cfg(not(loom))]
impl LockCounters {
    /// Decodes the counters from a copy of a lock's 48 bytes (as tools read them with
    /// `pread`, without mapping the segment); `None` if `bytes` is shorter than a lock.
    pub fn from_bytes(bytes: &[u8]) -> Option<LockCounters> {
        use std::mem::offset_of;
        let u32_at = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        if bytes.len() < std::mem::size_of::<RawLock>() {
            return None;
        }
        let tid = (u64_at(offset_of!(RawLock, word))? & PEER_MASK) as u32;
        Some(LockCounters {
            holder: (tid != 0).then_some(tid),
            acquisitions: u64_at(offset_of!(RawLock, acquisitions))?,
            contentions: u32_at(offset_of!(RawLock, contentions))?,
            owner_deaths: u32_at(offset_of!(RawLock, owner_deaths))?,
        })
    }
}
