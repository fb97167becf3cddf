//! Every nap and re-poll interval of mproc's waits, in one place, with the reason for each
//! value. A blocked wait sleeps in the kernel until woken, but never longer than its nap: a
//! peer that dies without waking anyone (or a wake-up lost any other way) then costs a waiter
//! one nap, not its life. Futures (the `async` feature) use the same intervals.

use std::time::Duration;

/// Any [`Parking`](crate::Parking) wait (events, semaphores, barriers, conditions): the safety
/// net against a waker killed between changing the state and waking. Rare, so a tenth of a
/// second is plenty; ten looks a second cost an idle waiter well under 0.1 % of a core.
pub const PARKING: Duration = Duration::from_millis(100);

/// A lock waiter's look at whether the holder is still alive (one `fcntl` on the liveness
/// roll). A holder that dies costs its waiters at most about this long; 50 looks a second
/// still cost a waiter well under 0.1 % of a core.
pub const LOCK_OWNER_CHECK: Duration = Duration::from_millis(20);

/// A blocked queue `put`/`get`: looks for a peer that died holding the slot or arena chunk it
/// waits for (and so never wakes it) every this much waiting.
pub const QUEUE_PEER_CHECK: Duration = Duration::from_millis(200);

/// A blocked queue `put`/`get`: its first look at peers' liveness, after this much waiting
/// (and in any case when its deadline passes, however short). Not at once: a live peer in
/// the middle of its copy is the common case, and asking after it on every spin costs a
/// round trip several times over (clock reads and `fcntl`s on a VM without a vDSO clock).
pub const QUEUE_FIRST_PEER_CHECK: Duration = Duration::from_millis(1);

/// `JoinableQueue::join`: the last item may leave without a wake-up (its producer or consumer
/// died), so a few looks a second.
pub const JOIN_CHECK: Duration = Duration::from_millis(50);

/// How long a blocking wait keeps looking (with spin hints, yielding the CPU now and then)
/// before it sleeps, when the calling thread's previous blocking wait ended within this
/// long. A peer that answers quickly (a ping-pong, a producer keeping a consumer busy) is
/// then met without a sleep and a wake-up, which cost several microseconds each on this VM
/// (the blocking round trip fell from about 10 µs to the busy-poll round trip's ~1 µs).
/// A thread whose waits are long — an idle consumer — does not spin at all, so it still
/// costs nothing while idle; a spin that finds nothing costs at most this long of a core.
pub const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);

/// How long a future that finds nothing keeps looking (yielding the CPU between looks)
/// before it registers with the reactor. A message already on its way is then taken without
/// two thread switches (reactor, then runtime): in the benchmark's async ping-pong this is
/// 4–6 µs a round against 30–35 µs without it. The price is at most this long on the
/// executor's thread per pending poll.
#[cfg_attr(any(not(feature = "async"), loom), allow(dead_code))] // the futures' and reactor's
pub const ASYNC_SPIN: Duration = Duration::from_micros(10);

/// How long the reactor stays awake after waking futures because something changed, for
/// their next registration: a future woken by a message usually handles it and waits again
/// within microseconds, and registering with an awake reactor costs no system call and no
/// thread switch. It yields the CPU while it waits.
#[cfg_attr(any(not(feature = "async"), loom), allow(dead_code))] // the futures' and reactor's
pub const REACTOR_LINGER: Duration = Duration::from_micros(50);

/// How often the reactor re-polls waits it could not put into its `futex_waitv` call (past
/// the kernel's 128 words, or on a kernel without `futex_waitv`).
#[cfg_attr(any(not(feature = "async"), loom), allow(dead_code))] // the futures' and reactor's
pub const REACTOR_OVERFLOW: Duration = Duration::from_millis(1);

/// Naps that end this close together are served by one reactor wake-up.
#[cfg_attr(any(not(feature = "async"), loom), allow(dead_code))] // the futures' and reactor's
pub const REACTOR_SLACK: Duration = Duration::from_millis(2);
