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
            if st.last_watch.is_none_or(|t| t.elapsed() >= WATCH_BUSY) {
                st.watch(shared.as_ref());
                st.dispatch(&shared.config);
            }
            if let Some(board) = &shared.board {
                board.publish(&st.board_snapshot());
            }
            if st.stopping {
                return;
            }
            continue;
        }
        let busy = shared.lock().busy();
        let wait = if busy { WATCH_BUSY } else { WATCH_IDLE };
        let first = shared.results.get_timeout(wait);
        let mut st = shared.lock();
        if st.take_reply(first) != Took::Nothing {
            st.drain_replies(shared.as_ref());
        }
        let due = st.last_watch.is_none_or(|t| t.elapsed() >= WATCH_BUSY);
        if due {
            st.watch(shared.as_ref());
        }
        st.dispatch(&shared.config);
        if let Some(board) = &shared.board {
            board.publish(&st.board_snapshot());
        }
        let stop = st.stopping;
        drop(st);
        shared.notify();
        if stop {
            return;
        }
    }
}
