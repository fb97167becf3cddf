//! Who is alive, decided by the kernel: the one place mproc asks whether a peer that left its
//! name in shared memory still runs.
//!
//! # Why not pids
//! A pid (plus a start time read from `/proc`) means nothing to a process in another pid
//! namespace (two containers sharing `/dev/shm`), cannot be read for a non-dumpable process,
//! and comes back after reuse. mproc's peers are therefore named by a *token* that the
//! kernel itself withdraws when the process dies, whatever namespace it lives in.
//!
//! # The roll
//! Each user has one roll file beside the segments, `/dev/shm/.mproc-roll-UID` (mode 0600,
//! empty: it holds no data, only locks). A process that touches mproc objects registers once:
//! - it picks a random *peer token* `P` (22 bits, the width the arena's chunk word has room
//!   for) and takes an open-file-description write lock (`F_OFD_SETLK`) on the whole byte
//!   range `[P << 32, (P + 1) << 32)` of the roll — failing if anyone holds any byte of it,
//!   so two live processes never share a token — then gives back all of the range but its
//!   first byte, which it keeps for its whole life;
//! - each thread that takes a [`RawLock`](../mproc_sync/struct.RawLock.html)-style lock adds
//!   a *thread number* `k` (31 bits, numbered from a random start) and locks byte
//!   `P << 32 | k`, released by a thread-local destructor when the thread exits.
//!
//! The kernel releases OFD locks when the last descriptor of the open file description is
//! closed: when the process dies, however it dies. Another process asks with `F_OFD_GETLK`
//! through its own descriptor (a different open file description, so it sees its own
//! process's locks too): *a peer is alive exactly while its byte is locked*. This holds
//! across pid namespaces (the lock is on the file, not on a pid), for non-dumpable processes,
//! and without `/proc`.
//!
//! Shared words store `P` (queue slots, arena chunks, segment creators) or `P | k << 32`
//! (lock owners). A token cannot be reused while its holder lives; after it dies, a new
//! process draws the same `P` with probability 2^-22 per registration — it then looks like
//! the dead one until it exits too, which delays recovery of what the dead one held (never
//! loses an item or grants a lock twice). A lock identity adds the thread number, so a stale
//! lock word is taken for a live thread's with odds of 2^-53.
//!
//! # Fork
//! A child inherits its parent's descriptors, and with them the open file description that
//! holds the parent's locks: a child that kept it would keep a dead parent "alive". A
//! `pthread_atfork` handler closes both roll descriptors in the child (`close` is
//! async-signal-safe) and forgets the token; the child registers anew on first use.
//!
//! # When registration fails
//! [`register`] reports why (no shared-memory directory, a roll planted by another user, out
//! of descriptors); `create`/`open` of every object call it, so the usual failure is a typed
//! error there. A hot path that finds the process unregistered (a forked child out of
//! descriptors) uses [`UNKNOWN`]: peers take such a claim for alive for ever (its crash is
//! then not recovered; nothing is lost or granted twice).
//!
//! # Limits
//! - A process that closes descriptors it did not open (a daemon's close-all loop after
//!   mproc registered) gives up its token: peers then take it for dead. mproc's own fork
//!   paths keep the roll's descriptors ([`roll_fds`]).
//! - Peers must share the directory holding the roll (the same `/dev/shm`); deleting the roll
//!   file while mproc processes run makes later processes see the earlier ones as dead.
//! - Rolls are per user: processes of different users sharing one object (opened with
//!   `allow_foreign_owner`) do not see each other's tokens, so crash recovery between them
//!   is not supported.

use std::cell::Cell;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::SegmentError;

mod roll;
use crate::ofd::{self, Lock};
pub use roll::{Roll, roll_path, roll_path_of};
use roll::{close, file_id, open_roll, random_u32, roll_error};

/// Bits of a peer token.
pub const PEER_BITS: u32 = 22;
/// The mask of a peer token.
pub const PEER_MASK: u32 = (1 << PEER_BITS) - 1;
/// The token of a process that could not register: taken for alive by everyone.
pub const UNKNOWN: u32 = PEER_MASK;
/// In a thread identity ([`thread_me`]): the thread holds its own byte of the roll, so its
/// exit can be seen (without it only the process's death can).
pub const THREAD_TRACKED: u64 = 1 << 63;
/// The mask of a thread identity's thread number (bits 32..63).
const THREAD_NUM_MASK: u64 = ((1 << 31) - 1) << 32;

const UNREGISTERED: u32 = 0;
const REGISTERING: u32 = 1;
const REGISTERED: u32 = 2;
const FAILED: u32 = 3;

/// Registration state of this process (reset in a forked child).
static STATE: AtomicU32 = AtomicU32::new(UNREGISTERED);
/// This process's peer token (valid when `STATE` is `REGISTERED`).
static PEER: AtomicU32 = AtomicU32::new(0);
/// The descriptor whose open file description holds this process's locks.
static HOLD_FD: AtomicI32 = AtomicI32::new(-1);
/// A second descriptor of the roll, for asking (its own open file description, so the
/// locks held through `HOLD_FD` are visible to it).
static ASK_FD: AtomicI32 = AtomicI32::new(-1);
/// The next thread number to hand out (seeded at random at registration).
static NEXT_THREAD: AtomicU32 = AtomicU32::new(0);
/// Registration generation: bumped at every (re-)registration, so a thread's cached identity
/// from before a fork is recognised as stale.
static EPOCH: AtomicU64 = AtomicU64::new(0);
/// When a failed registration may be tried again (ms since `BASE`).
static RETRY_AT: AtomicU64 = AtomicU64::new(0);
static ATFORK: AtomicBool = AtomicBool::new(false);

/// How long after a failed registration the hot paths try again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

thread_local! {
    /// This thread's identity (`P | k << 32 | THREAD_TRACKED`) and the epoch it belongs to;
    /// releases the thread's byte when the thread exits.
    static THREAD: ThreadToken = const { ThreadToken { id: Cell::new(0), epoch: Cell::new(0) } };
}

struct ThreadToken {
    id: Cell<u64>,
    epoch: Cell<u64>,
}

impl Drop for ThreadToken {
    fn drop(&mut self) {
        let id = self.id.get();
        if id & THREAD_TRACKED != 0 && self.epoch.get() == EPOCH.load(Ordering::Acquire) {
            let fd = HOLD_FD.load(Ordering::Acquire);
            if fd >= 0 {
                let _ = ofd::set(fd, Lock::Unlock, thread_byte(id), 1);
            }
        }
    }
}

/// The calling process's peer token, registering it first if needed. Never fails: a process
/// that cannot register gets [`UNKNOWN`] (see the module docs). One atomic load when
/// registered.
#[inline]
pub fn me() -> u32 {
    if STATE.load(Ordering::Acquire) == REGISTERED {
        return PEER.load(Ordering::Relaxed);
    }
    me_slow()
}

#[cold]
fn me_slow() -> u32 {
    match STATE.load(Ordering::Acquire) {
        FAILED if now_ms() < RETRY_AT.load(Ordering::Relaxed) => UNKNOWN,
        _ => register().unwrap_or(UNKNOWN),
    }
}

/// Registers the calling process in its user's roll (once; again in a forked child) and
/// returns its peer token. `create`/`open` of every mproc object call this, so that a process
/// that cannot be told apart from a dead one is refused there, with the reason.
pub fn register() -> Result<u32, SegmentError> {
    register_atfork();
    loop {
        match STATE.compare_exchange(
            UNREGISTERED,
            REGISTERING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => break,
            Err(REGISTERED) => return Ok(PEER.load(Ordering::Relaxed)),
            Err(REGISTERING) => std::thread::yield_now(),
            Err(_) => {
                // FAILED: try again (anyone may).
                if STATE
                    .compare_exchange(FAILED, REGISTERING, Ordering::Acquire, Ordering::Acquire)
                    .is_ok()
                {
                    break;
                }
            }
        }
    }
    match do_register() {
        Ok((hold, ask, peer)) => {
            HOLD_FD.store(hold, Ordering::Release);
            ASK_FD.store(ask, Ordering::Release);
            PEER.store(peer, Ordering::Relaxed);
            NEXT_THREAD.store(random_u32() >> 1 | 1, Ordering::Relaxed);
            EPOCH.fetch_add(1, Ordering::AcqRel);
            // SYNC POINT: Release publishes PEER and the descriptors to `me`'s Acquire.
            STATE.store(REGISTERED, Ordering::Release);
            Ok(peer)
        }
        Err(e) => {
            RETRY_AT.store(now_ms() + RETRY_AFTER.as_millis() as u64, Ordering::Relaxed);
            STATE.store(FAILED, Ordering::Release);
            Err(e)
        }
    }
}

/// Opens (creating if needed) this user's roll twice and claims a token: (hold fd, ask fd,
/// token).
fn do_register() -> Result<(RawFd, RawFd, u32), SegmentError> {
    let path = roll_path();
    let hold = open_roll(&path, true)?;
    let ask = match open_roll(&path, false) {
        Ok(fd) => fd,
        Err(e) => {
            close(hold);
            return Err(e);
        }
    };
    // Both must be the same file (someone could swap the name between the two opens).
    if file_id(hold) != file_id(ask) {
        close(hold);
        close(ask);
        return Err(roll_error(
            "the roll file was replaced while it was being opened",
        ));
    }
    for _ in 0..64 {
        let peer = random_u32() & PEER_MASK;
        if peer == 0 || peer == UNKNOWN {
            continue;
        }
        let start = u64::from(peer) << 32;
        // All of the token's range: fails if any live process holds any byte of it.
        match ofd::set(hold, Lock::Write, start, 1 << 32) {
            Ok(()) => {
                // Keep the first byte; thread bytes are taken one by one later.
                let _ = ofd::set(hold, Lock::Unlock, start + 1, (1 << 32) - 1);
                return Ok((hold, ask, peer));
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::ACCESS) => continue,
            Err(e) => {
                close(hold);
                close(ask);
                return Err(SegmentError::io("fcntl(F_OFD_SETLK) on the roll", e));
            }
        }
    }
    close(hold);
    close(ask);
    Err(roll_error("no free peer token after 64 draws"))
}

/// The calling thread's lock identity: `P | k << 32 | THREAD_TRACKED` (see the module docs).
/// A thread-local read after the first call in each thread.
#[inline]
pub fn thread_me() -> u64 {
    THREAD.with(|t| {
        let id = t.id.get();
        if id != 0 && t.epoch.get() == EPOCH.load(Ordering::Relaxed) {
            id
        } else {
            thread_me_slow(t)
        }
    })
}

#[cold]
fn thread_me_slow(t: &ThreadToken) -> u64 {
    let peer = me();
    let epoch = EPOCH.load(Ordering::Acquire);
    if peer == UNKNOWN {
        // Still a unique identity inside this process (threads are told apart), but nobody
        // can judge its liveness: not cached, so registration is tried again later.
        let k = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
        return u64::from(peer) | (u64::from(k.max(1)) << 32);
    }
    let k = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff;
    let k = k.max(1);
    let mut id = u64::from(peer) | (u64::from(k) << 32);
    let fd = HOLD_FD.load(Ordering::Acquire);
    if fd >= 0 && ofd::set(fd, Lock::Write, thread_byte(id), 1).is_ok() {
        id |= THREAD_TRACKED;
    }
    t.id.set(id);
    t.epoch.set(epoch);
    id
}

fn thread_byte(id: u64) -> u64 {
    (id & u64::from(PEER_MASK)) << 32 | (id & THREAD_NUM_MASK) >> 32
}

/// Whether the process with peer token `peer` is alive, asked of the kernel. The caller's own
/// token is alive; [`UNKNOWN`] is taken for alive; 0 (no token) is dead. If the roll cannot
/// be read, peers are taken for alive (never recovered rather than recovered wrongly).
pub fn peer_alive(peer: u32) -> bool {
    let peer = peer & PEER_MASK;
    if peer == 0 {
        return false;
    }
    if peer == UNKNOWN || peer == me() {
        return true;
    }
    locked(u64::from(peer) << 32).unwrap_or(true)
}

/// Whether the thread named by a lock identity (see [`thread_me`]) is alive: its process is
/// alive and, if the thread holds its own byte, the thread has not exited.
pub fn thread_alive(id: u64) -> bool {
    let peer = (id as u32) & PEER_MASK;
    if !peer_alive(peer) {
        return false;
    }
    if id & THREAD_TRACKED == 0 || peer == UNKNOWN {
        return true;
    }
    locked(thread_byte(id)).unwrap_or(true)
}

/// Whether someone holds a lock on byte `at` of this user's roll; `None` if the roll cannot
/// be asked.
fn locked(at: u64) -> Option<bool> {
    let mut fd = ASK_FD.load(Ordering::Acquire);
    if fd < 0 {
        // Not registered (a tool, or registration failed): an asking-only descriptor.
        register().ok()?;
        fd = ASK_FD.load(Ordering::Acquire);
        if fd < 0 {
            return None;
        }
    }
    ofd::held_elsewhere(fd, at, 1)
}

/// Whether the peer `peer` of user `uid` is alive, asked through a descriptor of that user's
/// roll opened for the purpose (tools: nothing is registered). `Some(false)` if the user has
/// no roll (nobody of theirs ever registered); `None` if the roll cannot be read.
pub fn peer_alive_of_user(uid: u32, peer: u32) -> Option<bool> {
    if uid == rustix::process::geteuid().as_raw()
        && peer & PEER_MASK == PEER.load(Ordering::Relaxed)
        && STATE.load(Ordering::Acquire) == REGISTERED
    {
        return Some(true);
    }
    match Roll::of_user(uid) {
        Ok(Some(roll)) => roll.peer_alive(peer),
        Ok(None) => Some(peer & PEER_MASK == UNKNOWN),
        Err(_) => None,
    }
}

/// The roll descriptors this process holds (to keep when closing every other descriptor).
pub fn roll_fds() -> [RawFd; 2] {
    [
        HOLD_FD.load(Ordering::Acquire),
        ASK_FD.load(Ordering::Acquire),
    ]
}

fn now_ms() -> u64 {
    crate::monotonic_ms()
}

/// Before a fork: let a registration in progress in another thread finish (a few system
/// calls), so that the child does not inherit descriptors it opened but has not recorded yet
/// — the child could not close them, and the one holding the new token's lock would keep the
/// parent "alive" for as long as the child lives. Bounded: a registration that does not
/// finish within ~100 ms (a stopped thread) is not waited for.
extern "C" fn settle_before_fork() {
    for _ in 0..100_000 {
        if STATE.load(Ordering::Acquire) != REGISTERING {
            return;
        }
        std::thread::yield_now();
    }
}

/// In a forked child: drop the parent's descriptors (and with them nothing of the parent's:
/// the parent still holds its open file description) and forget the token.
extern "C" fn forget_in_child() {
    let hold = HOLD_FD.swap(-1, Ordering::Relaxed);
    let ask = ASK_FD.swap(-1, Ordering::Relaxed);
    close(hold);
    close(ask);
    PEER.store(0, Ordering::Relaxed);
    STATE.store(UNREGISTERED, Ordering::Relaxed);
    RETRY_AT.store(0, Ordering::Relaxed);
    // The forking thread's cached identity is its parent's: a new epoch makes it stale.
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler once (a flag, not a `Once`: see `process::register_atfork`).
fn register_atfork() {
    if ATFORK
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: registers handlers that only load atomics and yield (before the fork) and
        // close descriptors and store to atomics (in the child): async-signal-safe, valid in
        // a forked child.
        unsafe { libc::pthread_atfork(Some(settle_before_fork), None, Some(forget_in_child)) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_process_and_thread_are_alive_and_others_are_not() {
        let p = register().unwrap();
        assert!(p != 0 && p != UNKNOWN);
        assert_eq!(me(), p);
        assert!(peer_alive(p));
        let t = thread_me();
        assert_eq!(t as u32 & PEER_MASK, p);
        assert!(t & THREAD_TRACKED != 0);
        assert!(thread_alive(t));
        // A thread that exited is dead; its process is not.
        let other = std::thread::spawn(thread_me).join().unwrap();
        assert_ne!(other, t);
        assert!(!thread_alive(other));
        assert!(peer_alive(other as u32 & PEER_MASK));
        assert!(!peer_alive(0));
        assert!(peer_alive(UNKNOWN));
    }
}
