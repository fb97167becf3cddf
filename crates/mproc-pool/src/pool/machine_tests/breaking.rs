//! The state machine's ways to stop: workers that never get ready, replacements refused
//! for a while or for good, requests too large to store, shutdown, a failed initializer,
//! unreadable and stale replies, abandoned jobs.

use super::*;

#[test]
fn workers_dying_before_they_are_ready_break_the_pool() {
    let (mut st, env) = pool(1, config());
    st.workers[0].ready = false;
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    for round in 0..3 {
        assert!(st.broken.is_none(), "broken after {round} failures");
        st.workers[0].io.exit(ExitStatus::Code(1));
        st.watch(&env);
        st.dispatch(&env.config);
    }
    assert!(matches!(
        st.broken,
        Some(TaskError::Broken(crate::PoolBroken::Start { .. }))
    ));
    assert!(matches!(
        failed_with(&st, id),
        Some(TaskError::Broken(crate::PoolBroken::Start { .. }))
    ));
    assert!(st.stopping && st.closed);
    assert!(matches!(
        st.submit(FnRef::new(square as fn(u32) -> u32), 1, vec![], None),
        Err(crate::SubmitError::Broken(crate::PoolBroken::Start { .. }))
    ));
}

#[test]
fn a_replacement_refused_for_a_while_by_eagain_is_retried_and_the_pool_goes_on() {
    let (mut st, env) = pool(1, config());
    env.eagain_starts.set(4);
    st.workers[0].io.exit(ExitStatus::Signaled(SIGKILL));
    st.watch(&env);
    assert!(st.broken.is_none(), "a passing fork failure broke the pool");
    assert_eq!(st.restarts_due.len(), 1);
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    assert_eq!(st.pending.len(), 1, "nothing is sent to a dead worker");
    // Retried with backoff (10, 20, 40, 80 ms...) until the system lets it fork again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !st.restarts_due.is_empty() {
        assert!(Instant::now() < deadline, "never retried");
        std::thread::sleep(Duration::from_millis(5));
        st.watch(&env);
    }
    assert!(st.broken.is_none());
    assert_eq!(env.eagain_starts.get(), 0);
    assert_eq!(st.restarts.died, 1);
    st.dispatch(&env.config);
    assert!(st.pending.is_empty(), "the replacement takes the job");
    st.workers[0].io.take();
    done(&mut st, 0, id);
    assert!(matches!(outcome(&st, id), Some(Outcome::Body(_))));
}

#[test]
fn a_replacement_that_cannot_start_breaks_the_pool_and_kills_the_rest() {
    let (mut st, env) = pool(2, config());
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    env.fail_start.set(true);
    st.workers[0].io.take();
    st.workers[0].io.exit(ExitStatus::Signaled(SIGKILL));
    st.watch(&env);
    assert!(
        matches!(st.broken, Some(TaskError::Broken(crate::PoolBroken::Start { ref message })) if message.contains("no more processes"))
    );
    assert!(matches!(
        failed_with(&st, id),
        Some(TaskError::WorkerDied { .. })
    ));
    assert_eq!(st.workers[1].io.kills.get(), 1);
}

#[test]
fn a_request_too_large_to_store_fails_its_job_with_a_hint() {
    let (mut st, env) = pool(1, config());
    st.workers[0].io.refuse.set(true);
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    match failed_with(&st, id) {
        Some(TaskError::Encode { message }) => assert!(message.contains("arena_bytes")),
        other => panic!("{other:?}"),
    }
    assert!(st.workers[0].sent.is_empty() && st.pending.is_empty());
}

#[test]
fn shutdown_fails_every_unfinished_job_and_refuses_new_ones() {
    let (mut st, env) = pool(2, config());
    let ids: Vec<u64> = (0..6).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    st.workers[0].io.take();
    done(&mut st, 0, ids[0]);
    st.break_pool_soft(TaskError::Terminated);
    assert!(matches!(outcome(&st, ids[0]), Some(Outcome::Body(_))));
    for id in &ids[1..] {
        assert_eq!(failed_with(&st, *id), Some(TaskError::Terminated));
    }
    assert!(!st.busy());
    assert!(st.workers.iter().all(|w| w.io.kills.get() == 0));
    assert_eq!(
        st.submit(FnRef::new(square as fn(u32) -> u32), 1, vec![], None),
        Err(crate::SubmitError::Closed)
    );
    st.break_pool(TaskError::Terminated);
    // Already broken: break_pool does not signal again.
    assert!(st.workers.iter().all(|w| w.io.kills.get() == 0));
}

#[test]
fn an_initializer_failure_breaks_the_pool_and_kills_every_worker() {
    let (mut st, _env) = pool(2, config());
    st.on_reply(Reply::InitFailed {
        worker: 0,
        pid: 100,
        message: "no config".into(),
    });
    assert_eq!(
        st.broken,
        Some(TaskError::Broken(crate::PoolBroken::InitializerFailed {
            message: "no config".into()
        }))
    );
    assert!(st.workers.iter().all(|w| w.io.kills.get() == 1));
}

#[test]
fn an_unreadable_reply_is_dropped_and_a_stale_pids_reply_moves_no_worker() {
    let (mut st, env) = pool(1, config());
    let got = Err(GetError::Unreadable {
        reason: "garbage".into(),
    });
    assert_eq!(st.take_reply(got), Took::Unreadable);
    assert_eq!(st.take_reply(Err(GetError::Empty)), Took::Nothing);
    let id = submit(&mut st, None);
    st.dispatch(&env.config);
    // A reply that claims slot 0 from another pid does not touch slot 0's bookkeeping.
    st.on_reply(Reply::Ready {
        worker: 0,
        pid: 999,
    });
    st.on_reply(Reply::Done {
        worker: 0,
        pid: 999,
        job: 12345,
        body: vec![],
    });
    assert_eq!(st.workers[0].sent, VecDeque::from([id]));
    assert_eq!(st.workers[0].completed, 0);
}

#[test]
fn an_abandoned_job_is_forgotten_when_it_finishes_and_never_sent_if_waiting() {
    let (mut st, env) = pool(1, config());
    let ids: Vec<u64> = (0..3).map(|_| submit(&mut st, None)).collect();
    st.dispatch(&env.config);
    crate::pool::state::abandon_job(&mut st, ids[0]);
    crate::pool::state::abandon_job(&mut st, ids[2]);
    st.workers[0].io.take();
    done(&mut st, 0, ids[0]);
    assert!(!st.jobs.contains_key(&ids[0]));
    st.dispatch(&env.config);
    assert!(!st.jobs.contains_key(&ids[2]));
    assert_eq!(st.workers[0].io.inbox_jobs(), vec![ids[1]]);
}
