//! The wake-up protocol between the handler thread, callers that wait for results, and
//! futures: the shared state behind one lock, a condition variable with a sleeper count, a
//! generation number, and the futures' wakers. A waiting caller first reads the results queue
//! itself for a moment ([`SPIN_FOR`]), then sleeps until the handler notifies.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mproc_queue::{GetError, Queue};

use super::WATCH_BUSY;
use super::io::{Live, start_one};
use super::seam::PoolIo;

use super::state::Took;
use super::state::{Config, State};
use crate::protocol::Reply;

/// What the pool's threads share: the scheduling state behind one lock, the results queue,
/// and how waiters are told the state changed.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State<Live>>,
    pub changed: Condvar,
    /// Bumped after every change waiters may care about (see [`Shared::notify`]).
    pub generation: AtomicU64,
    /// Threads sleeping on `changed`.
    pub sleepers: AtomicUsize,
    /// Callers reading the results queue themselves right now (see `wait_until`).
    pub drivers: AtomicUsize,
    pub results: Queue<Reply>,
    /// Held by the handler thread from before it reads the results queue outside the state
    /// lock until it holds the state lock: while it is held, a reply may be in the
    /// handler's hands and in neither the queue nor the state, so nobody settles a dead
    /// worker (which would report its finished job as lost). `round` only tries it.
    pub reading: Mutex<()>,
    pub config: Config,
    /// The status board, if the pool has a name.
    pub board: Option<super::board::Board>,
    /// Futures (and selects) waiting for a change, woken by [`Shared::notify`].
    pub wakers: Wakers,
}

/// Wakers of futures waiting on the pool's state (`AsyncResult` as a future, `Imap` as a
/// stream, selects): one-shot, like the reactor's registrations — `notify` wakes and forgets
/// them all; a future still not ready registers again. Counted, so that `notify` takes no lock
/// when no future waits.
#[derive(Debug, Default)]
pub(crate) struct Wakers {
    list: Mutex<std::collections::HashMap<u64, std::task::Waker>>,
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    next: AtomicU64,
    count: AtomicUsize,
}

impl Wakers {
    /// Registers `waker` (replacing registration `prev`, if any) and returns its id. Register
    /// first, then look at the state: a change after the look is followed by a `notify` that
    /// sees the registration.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn register(&self, prev: Option<u64>, waker: &std::task::Waker) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = prev {
            list.remove(&p);
        }
        list.insert(id, waker.clone());
        self.count.store(list.len(), Ordering::SeqCst);
        id
    }

    /// Removes a registration (a future dropped or done).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn remove(&self, id: u64) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.remove(&id);
        self.count.store(list.len(), Ordering::SeqCst);
    }

    fn wake_all(&self) {
        // SYNC POINT: `count` is stored (SeqCst) under the list lock before the registering
        // future looks at the state; `notify` changes the state first, then reads it here.
        if self.count.load(Ordering::SeqCst) == 0 {
            return;
        }
        let woken: Vec<std::task::Waker> = {
            let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
            self.count.store(0, Ordering::SeqCst);
            list.drain().map(|(_, w)| w).collect()
        };
        woken.into_iter().for_each(std::task::Waker::wake);
    }
}

/// How long a waiting caller polls for replies itself, after it starts waiting or after the
/// last reply it read, before it sleeps until the handler thread wakes it. Short tasks then
/// come back without two thread wake-ups in between (worker → handler → caller). The caller yields the CPU between polls, so on a machine
/// with as many workers as CPUs it does not slow the workers down.
const SPIN_FOR: Duration = Duration::from_micros(100);

/// How soon the handler looks again while a caller reads the replies.
pub(crate) const DRIVER_CHECK: Duration = Duration::from_millis(1);

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State<Live>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiters that the state changed. The condition variable is signalled only when
    /// someone sleeps on it (a signal is a system call, and most changes have no sleeper).
    pub(crate) fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        // SYNC POINT: pairs with the increment in `sleep`, made under the state lock before
        // the sleeper's last look at the state; a change made after that look is followed by
        // this load, which then sees the sleeper.
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_all();
        }
        self.wakers.wake_all();
    }

    /// Sleeps on the condition variable for at most `timeout` (a missed signal costs at most
    /// that), counted in `sleepers` so that `notify` knows to signal.
    pub(crate) fn sleep<'a>(
        &self,
        st: MutexGuard<'a, State<Live>>,
        timeout: Duration,
    ) -> MutexGuard<'a, State<Live>> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let st = self
            .changed
            .wait_timeout(st, timeout)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        st
    }

    /// Waits until `check` finds what it looks for in the state; `None` if `deadline` passed
    /// first.
    ///
    /// While replies come within [`SPIN_FOR`] of each other (and for the first `SPIN_FOR`)
    /// the caller reads the results queue itself (replies it takes are handled exactly as the
    /// handler would: under the lock, then notified); after that it sleeps on the condition
    /// variable and the handler thread does the reading.
    pub(crate) fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut(&mut State<Live>) -> Option<T>,
    ) -> Option<T> {
        let mut spin_until = Instant::now() + SPIN_FOR;
        let mut st = self.lock();
        loop {
            if let Some(v) = check(&mut st) {
                return Some(v);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            if now < spin_until {
                let seen = self.generation.load(Ordering::SeqCst);
                drop(st);
                self.drivers.fetch_add(1, Ordering::SeqCst);
                loop {
                    // Read under the lock: a reply taken off the queue is handled before the
                    // handler can settle a dead worker (which first drains the queue, also
                    // under the lock), so a finished job is never also reported dead.
                    let mut st = self.lock();
                    let took = st.take_reply(self.results.try_get());
                    if took == Took::Reply {
                        self.round(&mut st, took);
                        drop(st);
                        self.notify();
                        // Replies keep coming: keep reading them here (a `map` of short tasks
                        // is then driven by its caller from start to end, with no hand-over
                        // to the handler thread and back for each reply).
                        spin_until = Instant::now() + SPIN_FOR;
                        break;
                    }
                    drop(st);
                    if self.generation.load(Ordering::SeqCst) != seen
                        || Instant::now() >= spin_until
                    {
                        break;
                    }
                    std::thread::yield_now();
                }
                self.drivers.fetch_sub(1, Ordering::SeqCst);
                st = self.lock();
                continue;
            }
            let cap = Duration::from_millis(100);
            let wait = deadline.map_or(cap, |d| d.saturating_duration_since(now).min(cap));
            st = self.sleep(st, wait);
        }
    }
}

impl Shared {
    /// One round of driving the pool, under the state lock, after a read of the results
    /// queue that `took` what it says: every reply behind a taken one is recorded, dead
    /// workers are settled if a look is due ([`WATCH_BUSY`] since the last), inboxes are
    /// refilled, and the status board is published (so a named pool's counters never lag
    /// what a returning `map` shows). The caller notifies after dropping the lock.
    ///
    /// The handler thread runs it after each wait on the results queue, and a caller
    /// waiting for a result runs it after each reply it reads itself (see [`wait_until`]):
    /// both drive the pool the same way.
    ///
    /// [`wait_until`]: Shared::wait_until
    pub(crate) fn round(&self, st: &mut State<Live>, took: Took) {
        if took != Took::Nothing {
            st.drain_replies(self);
        }
        if st.last_watch.is_none_or(|t| t.elapsed() >= WATCH_BUSY) {
            // Not while the handler may hold a reply outside the lock (see `reading`): it
            // watches itself as soon as it has recorded that reply.
            if let Ok(_reading) = self.reading.try_lock() {
                st.watch(self);
            }
        }
        st.dispatch(&self.config);
        if let Some(board) = &self.board {
            board.publish(&st.board_snapshot());
        }
    }
}

impl PoolIo for Shared {
    type Worker = Live;
    fn next_reply(&self) -> Result<Reply, GetError> {
        self.results.try_get()
    }
    fn start_replacement(&self, index: u32) -> Result<Live, crate::StartError> {
        start_one(&self.results, &self.config, index, true).map(|w| w.io)
    }
    fn config(&self) -> &Config {
        &self.config
    }
}
