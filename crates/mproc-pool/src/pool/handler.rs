//! The pool's handler thread: reads replies, refills workers' inboxes, watches for deaths,
//! publishes the status board, and notifies waiters after each round.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::state::Took;
use super::wakeup::{DRIVER_CHECK, Shared};
use super::{WATCH_BUSY, WATCH_IDLE};

/// The handler thread: replies, refills, deaths.
pub(crate) fn handler(shared: Arc<Shared>) {
    loop {
        if shared.drivers.load(Ordering::SeqCst) > 0 {
            // A waiting caller reads the replies right now: reading too would only make us
            // compete with it for the CPU and the lock. Look again soon (it stops reading when
            // its short polling phase ends) and keep watching the workers meanwhile.
            // A plain sleep, not the condition variable: the caller's notifications are for
            // other waiters, and waking us for each would cost it a system call per reply.
            std::thread::sleep(DRIVER_CHECK);
            let mut st = shared.lock();
            shared.round(&mut st, Took::Nothing);
            if st.stopping {
                return;
            }
            continue;
        }
        let busy = shared.lock().busy();
        let wait = if busy { WATCH_BUSY } else { WATCH_IDLE };
        // A reply taken here is in nobody else's sight until it is recorded under the state
        // lock: `reading` keeps dead workers from being settled meanwhile.
        let reading = shared.reading.lock().unwrap_or_else(|e| e.into_inner());
        let first = shared.results.get_timeout(wait);
        let mut st = shared.lock();
        let took = st.take_reply(first);
        drop(reading);
        shared.round(&mut st, took);
        let stop = st.stopping;
        drop(st);
        shared.notify();
        if stop {
            return;
        }
    }
}
