//! `RawLock`: a robust, process-shared mutex on one futex word that holds its owner's identity
//! — and nothing that is ever followed as a pointer.
//!
//! # Why not a robust pthread mutex
//! glibc's robust mutexes keep the kernel's robust-list links (`__prev` / `__next`) inside the
//! `pthread_mutex_t`, i.e. in shared memory; the owner's `unlock` writes through them. A peer
//! that rewrites them while a victim holds the lock turns the victim's `unlock` into a write of
//! the peer's choosing at an address of the peer's choosing. This lock keeps only integers in
//! shared memory and finds a dead owner the way mproc's queue finds a dead slot claimer: by
//! asking whether the owner still exists.
//!
//! # The owner word (`AtomicU64`)
//! `thread number (31 bits) << 32 | TRACKED << 63 | WAITERS << 30 | peer token (22 bits)`:
//! 0 is free; otherwise the word holds the owner's lock identity from
//! [`mproc_segment::liveness`] (the owner process's peer token and its thread's number,
//! neither of which a live process or thread shares with anyone, in any pid namespace), and
//! `WAITERS` says someone may sleep. Waiters sleep on the low 32 bits (a futex). Whether the
//! owner is alive is asked of the kernel (a lock on the owner's byte of the liveness roll),
//! never read from `/proc`; re-entry and deadlock checks compare the whole identity.
//!
//! - **Lock**: CAS `0 -> me` (Acquire). Contended: set `WAITERS` on the current owner word by
//!   CAS, sleep on it, and on waking take a free word as `me | WAITERS` (others may still
//!   sleep). A waiter sleeps in naps of [`NAP`]; after a nap in which the word did not change
//!   it checks the owner's liveness and, if the owner is dead (its thread exited, its process
//!   died, or its id now names another thread), takes the word over by CAS from exactly the
//!   value it judged and reports [`LockError::OwnerDied`].
//! - **Unlock** (owner only: the word must name the caller, or nothing happens): swap to 0
//!   (Release); if `WAITERS` was set, wake one sleeper.
//! - **Owner death**: the taker raises `inconsistent` before returning; every acquisition
//!   reports `OwnerDied` (with the guard: the lock *is* held) until a holder calls
//!   `make_consistent`.
//!
//! A holder killed between the swap and the wake leaves sleepers on a free word; they find it
//! free at the end of their nap. Uncontended, lock + unlock is one CAS, one load, one swap and
//! a thread-local read: no system call.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::LockError;
use crate::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::futex;

mod counters;
#[cfg(all(feature = "async", not(loom)))]
mod future;
#[cfg(all(feature = "async", not(loom)))]
use future::LockFuture;

pub use counters::LockCounters;

/// The owner's peer token: non-zero exactly when the lock is held.
const PEER_MASK: u64 = mproc_segment::liveness::PEER_MASK as u64;
const WAITERS: u64 = 1 << 30;
/// Every bit of the owner's identity (everything but `WAITERS` and the unused bit 31).
const ID_MASK: u64 = !(WAITERS | 1 << 31);

/// How long a waiter sleeps before checking whether the owner is still alive
/// ([`naps::LOCK_OWNER_CHECK`](crate::naps::LOCK_OWNER_CHECK)).
#[cfg(not(loom))]
const NAP: Duration = crate::naps::LOCK_OWNER_CHECK;

const KIND_PLAIN: u32 = 1;
const KIND_RECURSIVE: u32 = 2;

/// The in-memory form of a lock, `#[repr(C)]`, 48 bytes, 8-aligned, valid when zero-filled
/// (a free, consistent lock): place it in any segment at an 8-aligned offset.
///
/// Fields: `word` (the owner word, see the module docs: written by lockers, unlockers and
/// takers, always by CAS or swap); `count` (an [`RLock`](crate::RLock)'s depth; written by the
/// owner only); `inconsistent` (1 while an owner death is unresolved; written by holders);
/// `kind` (0 unset, 1 plain, 2 re-entrant; written once by `init`, checked by `open`);
/// counters for tools: `acquisitions` (written by each new holder, under the lock, on the
/// line it already owns: a load and a store, no extra atomic read-modify-write),
/// `contentions` (lockers that had to wait) and `owner_deaths` (take-overs from a dead
/// holder), both bumped on the slow path only.
#[repr(C, align(8))]
#[derive(Default)]
pub struct RawLock {
    word: AtomicU64,
    count: AtomicU32,
    inconsistent: AtomicU32,
    kind: AtomicU32,
    _pad0: u32,
    acquisitions: AtomicU64,
    contentions: AtomicU32,
    owner_deaths: AtomicU32,
    _pad1: [u32; 2],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<RawLock>() == 48);
#[cfg(not(loom))]
const _: () = assert!(std::mem::align_of::<RawLock>() == 8);

// SAFETY: #[repr(C)] atomics and padding that is never written; every bit pattern is a lock
// state (possibly nonsensical: held by a thread that does not exist, which waiters detect);
// no pointers.
#[cfg(not(loom))]
unsafe impl mproc_segment::ShmSafe for RawLock {}

/// The calling thread's owner word.
#[cfg(not(loom))]
#[inline]
fn me() -> u64 {
    mproc_segment::liveness::thread_me() & ID_MASK
}

/// Whether the owner named by `word` still runs (asked of the kernel).
#[cfg(not(loom))]
fn owner_alive(word: u64) -> bool {
    mproc_segment::liveness::thread_alive(word & ID_MASK)
}

/// Under loom every model thread runs on one OS thread: number them instead.
#[cfg(loom)]
fn me() -> u64 {
    use std::sync::atomic::{AtomicU64 as StdU64, Ordering as StdOrdering};
    static NEXT: StdU64 = StdU64::new(1);
    loom::thread_local! {
        static ID: u64 = NEXT.fetch_add(1, StdOrdering::Relaxed) % (1 << 21) + 1;
    }
    ID.with(|id| *id)
}

/// Loom models do not kill threads.
#[cfg(loom)]
fn owner_alive(_word: u64) -> bool {
    true
}

impl RawLock {
    /// A free lock (for locks that live in a process's own memory, and for tests).
    pub fn new(recursive: bool) -> RawLock {
        let l = RawLock::default();
        l.kind.store(
            if recursive {
                KIND_RECURSIVE
            } else {
                KIND_PLAIN
            },
            Ordering::Relaxed,
        );
        l
    }

    /// Marks a zero-filled lock (a fresh segment's: free, consistent, no counts) plain or
    /// re-entrant, which is what `open` checks. Only a lock never marked can be: `false`, and
    /// nothing changes, for one already initialised — so no call can reset a lock in use
    /// (which would let a second holder in while the first still holds it).
    pub fn init(&self, recursive: bool) -> bool {
        let kind = if recursive {
            KIND_RECURSIVE
        } else {
            KIND_PLAIN
        };
        self.kind
            .compare_exchange(0, kind, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether `init` made this lock re-entrant (`Some(true)`), plain (`Some(false)`), or
    /// neither (`None`: not an initialised lock).
    pub fn is_recursive(&self) -> Option<bool> {
        match self.kind.load(Ordering::Acquire) {
            KIND_PLAIN => Some(false),
            KIND_RECURSIVE => Some(true),
            _ => None,
        }
    }

    /// Blocks until the lock is acquired. A plain lock that the calling thread already holds
    /// is an error (`Os { errno: EDEADLK }`) rather than a hang.
    pub fn lock(&self) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.acquire(None, false, false)
            .map_err(|e| e.map(|()| self.guard(false)))?;
        Ok(self.guard(false))
    }

    /// Releases the lock without a guard: for bindings whose acquire and release are two
    /// calls (Python's `Lock.acquire()` / `release()`). The calling thread acquired it with
    /// [`lock`](Self::lock), [`try_lock`](Self::try_lock) or
    /// [`lock_timeout`](Self::lock_timeout) and `std::mem::forget` the guard (`OwnerDied`'s
    /// included). `Err(NotOwner)` if this thread does not hold it (nothing changes).
    ///
    /// ```
    /// let lock = mproc_sync::RawLock::new(false);
    /// std::mem::forget(lock.lock().map_err(|e| e.to_string())?);
    /// assert!(lock.try_lock().is_err());
    /// lock.unlock()?;
    /// assert!(lock.unlock().is_err());           // not held any more
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn unlock(&self) -> Result<(), LockError<()>> {
        self.release(false)
    }

    /// Declares the protected data consistent after an owner death, for a holder without a
    /// guard (see [`unlock`](Self::unlock)); only meaningful while this thread holds the lock.
    pub fn make_consistent(&self) {
        self.set_consistent();
    }

    /// [`lock`](Self::lock) for `?`: the death of a previous holder is not an error here.
    /// Whenever the lock is held the guard comes back, and [`RawGuard::owner_died`] says
    /// whether the protected data may be half-updated (check or repair it, then
    /// `make_consistent()`). The error, when there is one, carries no guard: it is
    /// `'static` and converts into `Box<dyn Error>` or `anyhow::Error` — the same choice
    /// std offers with `PoisonError::into_inner`, made once.
    pub fn lock_recover(&self) -> Result<RawGuard<'_>, LockError<()>> {
        self.lock().or_else(LockError::recover)
    }

    /// Acquires the lock if it is free right now; `Err(WouldBlock)` otherwise.
    pub fn try_lock(&self) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.acquire(None, true, false)
            .map_err(|e| e.map(|()| self.guard(false)))?;
        Ok(self.guard(false))
    }

    /// Blocks until the lock is acquired or `timeout` has passed (`Err(Timeout)`).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RawGuard<'_>, LockError<RawGuard<'_>>> {
        self.acquire(Some(Instant::now() + timeout), false, false)
            .map_err(|e| e.map(|()| self.guard(false)))?;
        Ok(self.guard(false))
    }

    /// Acquires the lock without blocking a thread (the `async` feature): completes with
    /// what [`lock`](Self::lock) returns, `OwnerDied` included (the holder's liveness is
    /// checked every 20 ms of waiting, as the blocking call does).
    ///
    /// The lock belongs to the thread that polls the future to completion, and the guard is
    /// not `Send` (it records that thread): use it on a current-thread runtime or a
    /// `LocalSet`, and do not move the guard across threads. A future dropped before it
    /// completes holds nothing.
    #[cfg(all(feature = "async", not(loom)))]
    pub fn lock_async(
        &self,
    ) -> impl std::future::Future<Output = Result<RawGuard<'_>, LockError<RawGuard<'_>>>> + '_ {
        LockFuture {
            lock: self,
            watch: None,
        }
    }

    /// One look for `lock_async`: `Ok(result)` when done, `Err(expected)` when the caller
    /// should sleep while the owner word's low half reads `expected` (WAITERS is set on it).
    #[cfg(all(feature = "async", not(loom)))]
    fn poll_acquire(&self) -> Result<Result<(), LockError<()>>, u32> {
        // Free, ours already (EDEADLK), or held by a dead owner: settled here.
        match self.acquire(None, true, false) {
            Err(LockError::WouldBlock) => {}
            r => return Ok(r),
        }
        let mine = me();
        loop {
            match self.contend(mine) {
                Ok(()) => return Ok(self.acquired(false, false)),
                Err(Some(expected)) => return Err(expected as u32),
                Err(None) => {}
            }
        }
    }

    /// One step of a contended acquisition, shared by `lock` and `lock_async`: take the word
    /// if it is free (as `mine | WAITERS`: others may be asleep, and our unlock must wake
    /// them), or set `WAITERS` on the holder's word. `Ok` when taken; `Err(Some(word))` to
    /// sleep while the word reads `word`; `Err(None)` when it moved: look again.
    fn contend(&self, mine: u64) -> Result<(), Option<u64>> {
        let v = self.word.load(Ordering::Relaxed);
        if v & PEER_MASK == 0 {
            // SYNC POINT: Acquire, as in `acquire`.
            return self
                .word
                .compare_exchange(v, mine | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                .map(drop)
                .map_err(|_| None);
        }
        if v & WAITERS == 0
            && self
                .word
                .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Err(None);
        }
        Err(Some(v | WAITERS))
    }

    fn guard(&self, recursive: bool) -> RawGuard<'_> {
        RawGuard {
            lock: self,
            recursive,
            _not_send: PhantomData,
        }
    }

    /// Takes the lock (`recursive`: or one more level of it, if the caller holds it). `Ok`
    /// or `Err(OwnerDied(()))` mean it is held.
    pub(crate) fn acquire(
        &self,
        deadline: Option<Instant>,
        nonblocking: bool,
        recursive: bool,
    ) -> Result<(), LockError<()>> {
        let mine = me();
        // SYNC POINT: Acquire pairs with the previous owner's Release swap in `release`.
        if self
            .word
            .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return self.acquired(recursive, false);
        }
        let v = self.word.load(Ordering::Relaxed);
        if v & ID_MASK == mine & ID_MASK {
            if recursive {
                let depth = self.count.load(Ordering::Relaxed);
                self.count.store(depth.saturating_add(1), Ordering::Relaxed);
                return self.consistency(());
            }
            return Err(LockError::Os {
                call: "lock",
                errno: mproc_segment::Errno::DEADLK,
            });
        }
        if nonblocking {
            return self.try_once(mine, recursive);
        }
        self.lock_slow(mine, deadline, recursive)
    }

    /// Takes the word if it is free now (keeping its WAITERS bit): true if we got it.
    fn take_if_free(&self, mine: u64) -> bool {
        let v = self.word.load(Ordering::Relaxed);
        // SYNC POINT: Acquire, as in `acquire`.
        v & PEER_MASK == 0
            && self
                .word
                .compare_exchange(
                    v,
                    mine | (v & WAITERS),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// One more look for `try_lock`: free now, or held by a dead owner.
    fn try_once(&self, mine: u64, recursive: bool) -> Result<(), LockError<()>> {
        if self.take_if_free(mine) {
            return self.acquired(recursive, false);
        }
        let v = self.word.load(Ordering::Relaxed);
        if v & PEER_MASK != 0 && !owner_alive(v) {
            return self.take_over(v, mine, recursive);
        }
        Err(LockError::WouldBlock)
    }

    fn lock_slow(
        &self,
        mine: u64,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<(), LockError<()>> {
        self.contentions.fetch_add(1, Ordering::Relaxed);
        #[cfg(not(loom))]
        {
            let backoff = crossbeam_utils::Backoff::new();
            while !backoff.is_completed() {
                if self.take_if_free(mine) {
                    return self.acquired(recursive, false);
                }
                backoff.snooze();
            }
        }
        loop {
            let expected = match self.contend(mine) {
                Ok(()) => return self.acquired(recursive, false),
                Err(None) => continue,
                Err(Some(expected)) => expected,
            };
            #[cfg(not(loom))]
            let nap_end = {
                let d = crate::Deadline::at(deadline);
                if d.passed() {
                    return Err(LockError::Timeout);
                }
                Some(d.nap_end(NAP))
            };
            #[cfg(loom)]
            let nap_end = deadline;
            futex::wait_low(&self.word, expected as u32, nap_end);
            // A nap that ended with the word unchanged: is the owner still there?
            if self.word.load(Ordering::Relaxed) == expected
                && nap_end.is_some_and(|t| Instant::now() >= t)
                && !owner_alive(expected)
            {
                match self.take_over(expected, mine, recursive) {
                    Err(LockError::WouldBlock) => continue,
                    r => return r,
                }
            }
        }
    }

    /// Takes the lock from the dead owner recorded in `v` (if the word is still exactly `v`).
    fn take_over(&self, v: u64, mine: u64, recursive: bool) -> Result<(), LockError<()>> {
        // SYNC POINT: Acquire, as for a normal acquisition (the dead owner's writes are as
        // visible as they will ever be).
        if self
            .word
            .compare_exchange(
                v,
                mine | (v & WAITERS),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(LockError::WouldBlock);
        }
        mproc_segment::slow_path_event!(
            dead_holder_peer = v & PEER_MASK,
            "lock taken over from a holder that died; the data it guards may be inconsistent"
        );
        self.acquired(recursive, true)
    }

    /// Bookkeeping once the word names us: the depth, the counter, the owner-death report.
    fn acquired(&self, recursive: bool, owner_died: bool) -> Result<(), LockError<()>> {
        if recursive {
            self.count.store(1, Ordering::Relaxed);
        }
        // Only the holder writes it: a load and a store are exact (and cheap).
        let n = self.acquisitions.load(Ordering::Relaxed);
        self.acquisitions
            .store(n.wrapping_add(1), Ordering::Relaxed);
        if owner_died {
            self.inconsistent.store(1, Ordering::Relaxed);
            self.owner_deaths.fetch_add(1, Ordering::Relaxed);
        }
        self.consistency(())
    }

    /// The lock's counters and holder, as tools show them (each field read on its own: a
    /// snapshot, not an atomic picture).
    pub fn counters(&self) -> LockCounters {
        LockCounters {
            holder: self.holder(),
            acquisitions: self.acquisitions.load(Ordering::Relaxed),
            contentions: self.contentions.load(Ordering::Relaxed),
            owner_deaths: self.owner_deaths.load(Ordering::Relaxed),
        }
    }

    fn consistency<G>(&self, g: G) -> Result<G, LockError<G>> {
        // SYNC POINT: written by holders only (under the lock), so the acquisition's ordering
        // makes the latest value visible.
        if self.inconsistent.load(Ordering::Relaxed) != 0 {
            Err(LockError::OwnerDied(g))
        } else {
            Ok(g)
        }
    }

    /// Releases (`recursive`: one level). `Err(NotOwner)` if the calling thread does not hold
    /// the lock (it is then left alone).
    pub(crate) fn release(&self, recursive: bool) -> Result<(), LockError<()>> {
        let mine = me();
        let v = self.word.load(Ordering::Relaxed);
        if v & ID_MASK != mine & ID_MASK {
            return Err(LockError::NotOwner);
        }
        if recursive {
            let depth = self.count.load(Ordering::Relaxed);
            if depth > 1 {
                self.count.store(depth - 1, Ordering::Relaxed);
                return Ok(());
            }
            self.count.store(0, Ordering::Relaxed);
        }
        // SYNC POINT: Release publishes the critical section to the next acquirer's Acquire.
        let old = self.word.swap(0, Ordering::Release);
        if old & WAITERS != 0 {
            futex::wake_low(&self.word, 1);
        }
        Ok(())
    }

    /// Declares the protected data consistent after an owner death (call while holding it).
    pub(crate) fn set_consistent(&self) {
        self.inconsistent.store(0, Ordering::Relaxed);
    }

    /// Whether an owner death is unresolved (no `make_consistent` since).
    pub fn is_inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Relaxed) != 0
    }

    /// The peer token of the current holder's process, if any (a snapshot, for tools).
    pub fn holder(&self) -> Option<u32> {
        let tid = (self.word.load(Ordering::Relaxed) & PEER_MASK) as u32;
        (tid != 0).then_some(tid)
    }
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawLock")
            .field("holder", &self.holder())
            .field("inconsistent", &self.is_inconsistent())
            .finish_non_exhaustive()
    }
}

/// Proof that the calling thread holds a [`RawLock`]; releases it on drop. Not `Send`: the
/// lock is owned by a thread (its id is in the lock word).
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RawGuard<'a> {
    lock: &'a RawLock,
    recursive: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RawGuard<'a> {
    pub(crate) fn recursive(lock: &'a RawLock) -> RawGuard<'a> {
        lock.guard(true)
    }

    /// Whether a holder died holding this lock and nobody has called `make_consistent`
    /// since: the protected data may be half-updated (what `OwnerDied` reports).
    pub fn owner_died(&self) -> bool {
        self.lock.is_inconsistent()
    }

    /// Declares the protected data consistent again after an owner death: later lockers get
    /// `Ok` instead of `OwnerDied`.
    pub fn make_consistent(&self) {
        self.lock.set_consistent();
    }

    /// The lock this guard holds (a `Condition` checks that a guard is of its own lock).
    pub(crate) fn lock_ref(&self) -> &'a RawLock {
        self.lock
    }
}

impl Drop for RawGuard<'_> {
    fn drop(&mut self) {
        // Only fails if the word no longer names this thread (a forked child dropping its
        // copy of a guard, or a peer that rewrote the word): then there is nothing to release.
        let _ = self.lock.release(self.recursive);
    }
}
