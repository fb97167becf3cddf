//! How a queue call waits, and what it reports when it could not proceed: the one vocabulary
//! between the caller's `put` / `try_put` / `put_timeout` (and the `get`s and loans) and the
//! ring's lock-free attempts.
//!
//! A call names its patience as a [`Wait`]. [`RawQueue::push`], [`RawQueue::pop`], the two
//! claims and [`RawQueue::alloc`] try the ring (or the arena) once, then sleep on the side's
//! [`Parking`] as `Wait` says, and report a refusal in one type per direction: [`Refused`]
//! for putting (which [`Refused::with`] turns into the caller's [`PutError`], handing the
//! value back) and [`GetError`] for getting. Nothing else translates outcomes.

use std::time::{Duration, Instant};

use mproc_segment::liveness;
use mproc_sync::Parking;

use crate::arena::Alloc;
use crate::atomic::Ordering;
use crate::error::{GetError, PutError};
use crate::raw::RawQueue;
use crate::ring::{Claim, Claimed, Pop, Push, RingHeader};

/// How long a blocked `put`/`get` sleeps before looking again
/// ([`naps::QUEUE_PEER_CHECK`](mproc_sync::__private::QUEUE_PEER_CHECK)).
pub(crate) const REPOLL: Duration = mproc_sync::__private::QUEUE_PEER_CHECK;
/// The first look at peers in a blocked wait ([`mproc_sync::__private::QUEUE_FIRST_PEER_CHECK`]).
const FIRST_CHECK: Duration = mproc_sync::__private::QUEUE_FIRST_PEER_CHECK;

/// How a call waits for room or for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Until it can proceed (`put`, `get`).
    Forever,
    /// Until this instant (`*_timeout`); running out of time is a `Timeout`.
    Until(Instant),
    /// Not at all (`try_*`); finding no room or nothing is `Full` or `Empty`.
    No,
    /// Not at all, and without asking whether peers that hold slots are alive (a system
    /// call): the attempts of the async futures, which ask after each wake-up or nap.
    Look,
}

impl Wait {
    /// `Until(now + timeout)`.
    pub fn after(timeout: Duration) -> Wait {
        Wait::Until(Instant::now() + timeout)
    }

    /// A non-blocking attempt, checking peers or not (the futures' polls).
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub fn poll(check_peers: bool) -> Wait {
        if check_peers { Wait::No } else { Wait::Look }
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Until(d) => Some(d),
            _ => None,
        }
    }

    fn nonblocking(self) -> bool {
        matches!(self, Wait::No | Wait::Look)
    }

    /// Whether a non-blocking attempt asks after peers holding slots.
    fn check_peers(self) -> bool {
        self != Wait::Look
    }

    /// What finding no room means for this wait.
    fn no_room(self) -> Refused {
        match self {
            Wait::Until(_) => Refused::Timeout,
            _ => Refused::Full,
        }
    }

    /// What finding nothing means for this wait.
    fn nothing(self) -> GetError {
        match self {
            Wait::Until(_) => GetError::Timeout,
            _ => GetError::Empty,
        }
    }

    /// Runs `attempt(check_peers)` (`None`: not yet) once, then, unless the wait is
    /// non-blocking, sleeps on `parking` between attempts until one succeeds or the deadline
    /// passes. `None` if it never did.
    fn run<T>(self, parking: &Parking, mut attempt: impl FnMut(bool) -> Option<T>) -> Option<T> {
        if self.nonblocking() {
            return attempt(self.check_peers());
        }
        // Fast path first: no clock read (which `block` needs) when the way is clear.
        attempt(false).or_else(|| block(parking, self.deadline(), attempt))
    }
}

/// Why a value (or a loan, or an arena chunk) could not be put.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No room (a slot, or arena space), and the call does not wait.
    Full,
    /// No room before the deadline.
    Timeout,
    Closed,
    /// Larger than the whole arena (`max` bytes; 0 without an arena).
    TooLarge {
        max: u64,
    },
    /// Anything else (encoding failed, a peer rewrote our chunk).
    Unsendable(String),
    /// The shared-memory filesystem had no room for `requested` more bytes of the arena.
    OutOfSpace {
        requested: u64,
    },
}

impl Refused {
    /// The caller's error, handing `value` (of `size` encoded bytes) back.
    pub fn with<T>(self, value: T, size: usize) -> PutError<T> {
        match self {
            Refused::Full => PutError::Full(value),
            Refused::Timeout => PutError::Timeout(value),
            Refused::Closed => PutError::Closed(value),
            Refused::TooLarge { max } => PutError::TooLarge { value, size, max },
            Refused::Unsendable(reason) => PutError::Unsendable { value, reason },
            Refused::OutOfSpace { requested } => PutError::OutOfSpace { value, requested },
        }
    }
}

impl Wait {
    /// Pushes one item, written into its slot by `fill(slot, ring_pos)`.
    pub fn push(self, raw: &RawQueue, mut fill: impl FnMut(&mut [u8], u64)) -> Result<(), Refused> {
        let hdr = raw.header();
        let me = liveness::me();
        self.run(&hdr.not_full, |check| {
            match raw.ring().try_push(me, check, &mut fill) {
                Push::Full => None,
                Push::Done => Some(Ok(())),
                Push::Closed => Some(Err(Refused::Closed)),
            }
        })
        .unwrap_or_else(|| Err(self.found_full(raw)))
    }

    /// Pops one item, handed to `take(slot, ring_pos)`.
    pub fn pop<R>(
        self,
        raw: &RawQueue,
        mut take: impl FnMut(&[u8], u64) -> R,
    ) -> Result<R, GetError> {
        let me = liveness::me();
        self.run(&raw.header().not_empty, |check| {
            popped(raw.ring().try_pop(me, check, &mut take))
        })
        .unwrap_or(Err(self.nothing()))
    }

    /// Claims a slot for writing in place (a `PodQueue` loan).
    pub fn claim_push(self, raw: &RawQueue) -> Result<Claimed, Refused> {
        let me = liveness::me();
        self.run(&raw.header().not_full, |check| {
            match raw.ring().try_claim_push(me, check) {
                Claim::Full => None,
                Claim::Slot(c) => Some(Ok(c)),
                Claim::Closed => Some(Err(Refused::Closed)),
            }
        })
        .unwrap_or_else(|| Err(self.found_full(raw)))
    }

    /// Claims a slot for reading in place (the read loans).
    pub fn claim_pop(self, raw: &RawQueue) -> Result<Claimed, GetError> {
        let me = liveness::me();
        self.run(&raw.header().not_empty, |check| {
            popped(raw.ring().try_claim_pop(me, check))
        })
        .unwrap_or(Err(self.nothing()))
    }

    /// Allocates an arena chunk of `units` units and returns its position. A non-blocking
    /// wait reclaims what dead peers left at the tail before it gives up.
    pub fn alloc(self, raw: &RawQueue, units: u64) -> Result<u64, Refused> {
        let pos = self.alloc_units(raw, units)?;
        // The chunk's pages must be reserved before anyone touches them.
        if let Err(requested) = raw.reserve_chunk(pos, units) {
            crate::body::free_unsent(raw, pos);
            return Err(Refused::OutOfSpace { requested });
        }
        Ok(pos)
    }

    fn alloc_units(self, raw: &RawQueue, units: u64) -> Result<u64, Refused> {
        let Some(arena) = raw.arena() else {
            return Err(self.no_room());
        };
        let me = liveness::me();
        if raw.is_closed() {
            return Err(Refused::Closed);
        }
        if let Alloc::Done(pos) = arena.try_alloc(me, units) {
            return Ok(pos);
        }
        let hdr = raw.header();
        hdr.space_waits.fetch_add(1, Ordering::Relaxed);
        if self.nonblocking() {
            arena.advance_tail(true);
            return match arena.try_alloc(me, units) {
                Alloc::Done(pos) => Ok(pos),
                Alloc::NoSpace => Err(Refused::Full),
            };
        }
        // Counted for tools while it waits (see `RingHeader::space_sleepers`).
        hdr.space_sleepers.fetch_add(1, Ordering::Relaxed);
        let _counted = SpaceSleeper(hdr);
        block(&arena.hdr.space, self.deadline(), |check| {
            if raw.is_closed() {
                return Some(Err(Refused::Closed));
            }
            arena.advance_tail(check);
            match arena.try_alloc(me, units) {
                Alloc::NoSpace => None,
                Alloc::Done(pos) => Some(Ok(pos)),
            }
        })
        .unwrap_or(Err(Refused::Timeout))
    }

    /// Counts a put that found the ring full and did not get room (not each wait: a producer
    /// that outpaces its consumers finds the ring full all the time, and a shared write per
    /// wait would cost it).
    fn found_full(self, raw: &RawQueue) -> Refused {
        raw.header().full_waits.fetch_add(1, Ordering::Relaxed);
        self.no_room()
    }
}

/// A pop attempt as `run` wants it: `None` while there is nothing to take.
fn popped<R>(p: Pop<R>) -> Option<Result<R, GetError>> {
    match p {
        Pop::Empty | Pop::InProgress => None,
        Pop::Item(r) => Some(Ok(r)),
        Pop::Closed => Some(Err(GetError::Closed)),
    }
}

/// One producer waiting for arena space, uncounted when dropped (also when unwinding).
struct SpaceSleeper<'a>(&'a RingHeader);

impl Drop for SpaceSleeper<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .space_sleepers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

/// Parks on `parking` until `poll` succeeds or `deadline` passes, re-polling so that a dead
/// peer's slot or chunk is noticed even though it never wakes us.
///
/// `poll(check_peers)` asks after the peers that hold the way (one `fcntl`, at most once a
/// millisecond per peer, see [`crate::raw::peer_alive`]) from [`FIRST_CHECK`] of waiting
/// on, then every [`REPOLL`], and once more when the deadline passes. So a wait of any
/// length, however short its timeout, recovers a dead producer's slot, a dead reader's slot
/// or a dead producer's chunk by its end — a loop of `get_timeout(10 ms)` as fast as one
/// blocking `get` — with no state carried from call to call; and a wait that is soon over
/// (the usual, a live peer finishing its copy) asks nothing.
fn block<T>(
    parking: &Parking,
    deadline: Option<Instant>,
    mut poll: impl FnMut(bool) -> Option<T>,
) -> Option<T> {
    let mut check_peers = false;
    loop {
        let d = mproc_sync::Deadline::at(deadline);
        let nap = if check_peers { REPOLL } else { FIRST_CHECK };
        if let Some(v) = parking.block_on(Some(d.nap_end(nap)), || poll(check_peers)) {
            return Some(v);
        }
        if d.passed() {
            // The last look asks after the peers, whatever the timeout was.
            return poll(true);
        }
        check_peers = true;
    }
}
