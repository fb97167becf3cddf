//! Spin briefly, then sleep on a futex: the one blocking protocol every primitive (and the
//! queue) uses.

use std::time::Instant;

use crate::atomic::{AtomicU32, Ordering, fence};
use crate::futex;

/// Where waiters sleep: a wake-up sequence number (the futex word) and a count of sleepers.
/// `#[repr(C)]`, 8 bytes, 4-aligned; all-zero is the initial state.
///
/// **Protocol** (SYNC POINT). The *state* a waiter waits for (a flag, a count, a queue slot)
/// lives elsewhere; `seq` only says "something changed".
///
/// - A waker first changes the state with a SeqCst read-modify-write (or store), then reads
///   `waiters` (SeqCst). If it is non-zero it bumps `seq` and calls `futex::wake`.
/// - A waiter reads `seq`, increments `waiters` (SeqCst), fences, and polls the state once
///   more; only if that fails does it sleep on the `seq` value it read.
///
/// Either the waker's read of `waiters` sees the waiter (then it bumps `seq`: if the waiter
/// has not slept yet, the kernel sees `seq` differ and does not let it sleep), or the waiter's
/// poll sees the waker's state change (the two SeqCst writes before two reads: Dekker). `seq`
/// only grows, so unlike sleeping on the state word itself there is no ABA: a state that
/// changed and changed back still wakes the waiter. When nobody waits, a waker pays one load.
///
/// A waiter killed while counted leaves `waiters` too high; wakers then make system calls
/// nobody needed, which is harmless.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Parking {
    pub(crate) seq: AtomicU32,
    pub(crate) waiters: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Parking>() == 8);

/// When a sleep that may last until `deadline` should end to poll again.
#[cfg(not(loom))]
pub(crate) fn nap_until(deadline: Option<Instant>) -> Option<Instant> {
    Some(crate::Deadline::at(deadline).nap_end(crate::naps::PARKING))
}

/// Under loom the models check the wake-up protocol itself: no safety-net timeout.
#[cfg(loom)]
pub(crate) fn nap_until(deadline: Option<Instant>) -> Option<Instant> {
    deadline
}

impl Parking {
    /// A parking place with nobody waiting.
    pub fn new() -> Parking {
        Parking::default()
    }

    /// Blocks until `poll` returns `Some`, or until `deadline` passes (then `None`).
    ///
    /// `poll` is tried a few times with exponential backoff (no system call) before the
    /// caller sleeps in the kernel.
    pub fn block_on<T>(
        &self,
        deadline: Option<Instant>,
        mut poll: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        let waited = WaitTimer::start();
        if let Some(v) = spin(&mut poll) {
            return waited.done(Some(v));
        }
        loop {
            let waiting = self.prepare();
            if let Some(v) = poll() {
                return waited.done(Some(v));
            }
            waiting.sleep(nap_until(deadline));
            drop(waiting);
            if let Some(v) = poll() {
                return waited.done(Some(v));
            }
            if crate::Deadline::at(deadline).passed() {
                return waited.done(None);
            }
        }
    }

    /// The waiter's half of the protocol, before its last look at the state: notes the
    /// sequence and counts the caller among the waiters (until the returned [`Waiting`] is
    /// dropped). The caller then looks at the state once more and, if it must wait, sleeps
    /// with [`Waiting::sleep`] (or registers a future, with the `async` feature). Every wait
    /// in mproc goes through here: `block_on`, `Condition`, the futures and selects.
    pub fn prepare(&self) -> Waiting<'_> {
        let seen = self.seq.load(Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        // The slow path is about to sleep anyway: a full fence makes the handshake hold even
        // when the caller's look at the state uses weaker loads than SeqCst.
        fence(Ordering::SeqCst);
        Waiting {
            parking: self,
            seen,
        }
    }

    /// Wakes one sleeper, if any is counted. Call after changing the state (SeqCst).
    pub fn wake_one(&self) {
        if self.has_waiters() {
            self.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake(&self.seq, 1);
        }
    }

    /// Wakes every sleeper, if any is counted. Call after changing the state (SeqCst).
    pub fn wake_all(&self) {
        if self.has_waiters() {
            self.seq.fetch_add(1, Ordering::SeqCst);
            futex::wake_all(&self.seq);
        }
    }

    fn has_waiters(&self) -> bool {
        waker_fence();
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// How many waiters are counted now (a snapshot; may include dead processes).
    pub fn waiters(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }
}

/// A waiter counted on a [`Parking`] (from [`Parking::prepare`]); dropping it uncounts it.
#[derive(Debug)]
#[must_use = "the waiter is uncounted when this is dropped"]
pub struct Waiting<'a> {
    parking: &'a Parking,
    seen: u32,
}

impl<'a> Waiting<'a> {
    /// Sleeps until a waker moves the sequence, `until` passes, or spuriously; returns whether
    /// the sequence moved since [`Parking::prepare`].
    pub fn sleep(&self, until: Option<Instant>) -> bool {
        futex::wait(&self.parking.seq, self.seen, until);
        self.changed()
    }

    /// Whether a waker has moved the sequence since [`Parking::prepare`].
    pub fn changed(&self) -> bool {
        self.parking.seq.load(Ordering::SeqCst) != self.seen
    }

    /// The parking place.
    pub fn parking(&self) -> &'a Parking {
        self.parking
    }

    /// The sequence value noted by [`Parking::prepare`] (what a futex wait expects).
    pub fn seen(&self) -> u32 {
        self.seen
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.parking.waiters.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The waker's side of the handshake: its SeqCst state change followed by the SeqCst load of
/// `waiters` is already ordered by the Rust/C++ memory model (both are in the single total
/// order of SeqCst operations), so real builds emit nothing here and the uncontended
/// `set`/`release`/`put` stays free of a fence. Loom models SeqCst accesses only as
/// acquire/release, so under loom the same ordering is expressed as an explicit SeqCst fence,
/// which loom does model.
#[inline]
fn waker_fence() {
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// Spin hints between two looks of the adaptive spin (a few hundred nanoseconds).
#[cfg(not(loom))]
const SPIN_GAP: u32 = 16;

#[cfg(not(loom))]
std::thread_local! {
    /// How long this thread's last blocking wait took, in microseconds (saturating;
    /// `u32::MAX` before its first). A plain `Cell` with a constant initialiser: no lazy
    /// initialisation and no destructor, so it is sound in a forked child.
    static LAST_WAIT_US: std::cell::Cell<u32> = const { std::cell::Cell::new(u32::MAX) };
}

/// Times one blocking wait, for the next one's spin (see [`ADAPTIVE_SPIN`]).
///
/// [`ADAPTIVE_SPIN`]: crate::naps::ADAPTIVE_SPIN
#[cfg(not(loom))]
struct WaitTimer(Instant);

#[cfg(not(loom))]
impl WaitTimer {
    fn start() -> WaitTimer {
        WaitTimer(Instant::now())
    }

    fn done<T>(self, r: Option<T>) -> Option<T> {
        let us = u32::try_from(self.0.elapsed().as_micros()).unwrap_or(u32::MAX);
        LAST_WAIT_US.with(|c| c.set(us));
        r
    }
}

#[cfg(loom)]
struct WaitTimer;

#[cfg(loom)]
impl WaitTimer {
    fn start() -> WaitTimer {
        WaitTimer
    }
    fn done<T>(self, r: Option<T>) -> Option<T> {
        r
    }
}

/// Looks for a while before the caller sleeps: a short exponential backoff always, then —
/// if this thread's last wait was over within [`ADAPTIVE_SPIN`] — up to that long more,
/// with spin hints and a yield of the CPU every 16 looks (a peer that needs this core gets
/// it).
///
/// [`ADAPTIVE_SPIN`]: crate::naps::ADAPTIVE_SPIN
#[cfg(not(loom))]
fn spin<T>(poll: &mut impl FnMut() -> Option<T>) -> Option<T> {
    let backoff = crossbeam_utils::Backoff::new();
    while !backoff.is_completed() {
        if let Some(v) = poll() {
            return Some(v);
        }
        backoff.snooze();
    }
    let budget = crate::naps::ADAPTIVE_SPIN;
    let recent = LAST_WAIT_US.with(|c| c.get());
    if u128::from(recent) > budget.as_micros() {
        return None;
    }
    let end = Instant::now() + budget;
    for look in 1u32.. {
        if let Some(v) = poll() {
            return Some(v);
        }
        if look % 16 == 0 {
            if Instant::now() >= end {
                return None;
            }
            std::thread::yield_now();
        } else {
            // Looks spaced out: each one reads the lines a producer is writing, and a look
            // per pause would keep pulling them away from it.
            for _ in 0..SPIN_GAP {
                std::hint::spin_loop();
            }
        }
    }
    None
}

/// Under loom, spinning only multiplies the interleavings to explore; go straight to the
/// futex protocol, which is what the models check.
#[cfg(loom)]
fn spin<T>(poll: &mut impl FnMut() -> Option<T>) -> Option<T> {
    poll()
}

/// Futures that wait on [`Parking`]s (the `async` feature): the protocol of
/// [`Parking::block_on`], with the reactor (see [`crate::reactor`]) in place of the sleep.
#[cfg(all(feature = "async", not(loom)))]
mod wait_async {
    use std::future::Future;
    use std::marker::PhantomData;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::Parking;
    use crate::select::Registration;

    use crate::naps::ASYNC_SPIN;

    /// Polls until `poll` succeeds or `budget` has passed (one look if it is zero).
    fn spin_for<T>(budget: Duration, poll: &mut impl FnMut() -> Option<T>) -> Option<T> {
        // The first look reads no clock: it is the fast path of every operation.
        if let Some(v) = poll() {
            return Some(v);
        }
        if budget.is_zero() {
            return None;
        }
        let end = std::time::Instant::now() + budget;
        // Spin-loop hints first, then yields, as the blocking calls' spin does.
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            backoff.snooze();
            if let Some(v) = poll() {
                return Some(v);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
        }
    }

    /// The future returned by [`wait_async`].
    #[must_use = "futures do nothing unless polled"]
    pub struct ParkFuture<'a, T, F> {
        parkings: [Option<&'a Parking>; 2],
        /// One registration a parking (counted among its waiters) while pending.
        regs: Vec<Registration<'a>>,
        nap: Duration,
        attempt: F,
        _t: PhantomData<fn() -> T>,
    }

    impl<T, F> std::fmt::Debug for ParkFuture<'_, T, F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ParkFuture")
                .field("waiting", &!self.regs.is_empty())
                .finish_non_exhaustive()
        }
    }

    // Nothing is ever pinned through the future: `attempt` is only called by `&mut`.
    impl<T, F> Unpin for ParkFuture<'_, T, F> {}

    /// A future that runs `attempt(check_peers)` until it returns `Some`, sleeping (through the
    /// reactor) on `parkings` in between: the async form of [`Parking::block_on`].
    ///
    /// `check_peers` is `true` on every attempt after a wake-up or a nap of `nap` (the
    /// blocking call's re-poll interval), when the operation should also look for dead peers.
    ///
    /// **Cancellation.** Dropping the future leaves nothing registered and takes it off the
    /// waiter counts. If the reactor had already woken it (a peer's `wake_one` may have
    /// chosen this future over a blocked thread) and it had not looked yet, the wake-up is
    /// passed on to another waiter, so dropping a future never strands a sleeper.
    pub fn wait_async<'a, T, F>(
        parkings: [Option<&'a Parking>; 2],
        nap: Duration,
        attempt: F,
    ) -> ParkFuture<'a, T, F>
    where
        F: FnMut(bool) -> Option<T>,
    {
        ParkFuture {
            parkings,
            regs: Vec::new(),
            nap,
            attempt,
            _t: PhantomData,
        }
    }

    impl<T, F: FnMut(bool) -> Option<T>> Future for ParkFuture<'_, T, F> {
        type Output = T;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
            let this = &mut *self;
            let check = !this.regs.is_empty();
            // A first poll, or one after a waker moved the sequence: things are moving, and
            // looking on for a moment may catch the next change. After a nap (an idle wait
            // looking for dead peers) one look is enough.
            let busy = this.regs.is_empty() || this.regs.iter().any(|r| r.woken_by_change());
            // We are about to look: a wake-up we absorbed is ours, not to pass on.
            this.regs.drain(..).for_each(|r| {
                r.finish();
            });
            let budget = if busy { ASYNC_SPIN } else { Duration::ZERO };
            if let Some(v) = spin_for(budget, &mut || (this.attempt)(check)) {
                return Poll::Ready(v);
            }
            // As in `block_on`: count ourselves and note the sequence, then look once more.
            let nap = this.nap;
            this.regs.extend(
                this.parkings
                    .iter()
                    .flatten()
                    .map(|p| Registration::parking_for(p, cx.waker(), nap)),
            );
            if let Some(v) = (this.attempt)(check) {
                this.regs.drain(..).for_each(|r| {
                    r.finish();
                });
                return Poll::Ready(v);
            }
            Poll::Pending
        }
    }
}

#[cfg(all(feature = "async", not(loom)))]
pub use wait_async::{ParkFuture, wait_async};
