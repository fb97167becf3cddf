//! Pool results, imap streams and processes awaited (the `async` feature), with real workers.

use std::pin::Pin;
use std::time::Duration;

use mproc_pool::{JoinError, Pool, Process, TaskError, ThreadedFork};
use mproc_sync::{Event, Waitable, select};
use mproc_testkit::{block_on_for, poll_once, unique_name, with_deadline};

const LIMIT: Duration = Duration::from_secs(60);

fn pool(n: usize) -> Pool {
    Pool::builder()
        .processes(n)
        .threaded_fork(ThreadedFork::Allow)
        .build()
        .unwrap()
}

/// Blocks on a named event (bounded), then returns `x`.
fn after_event((name, x): (String, u64)) -> u64 {
    let ev = Event::open(&name).expect("open event");
    assert!(ev.wait_timeout(Duration::from_secs(30)), "never released");
    x
}

/// The next item of a stream, without a futures crate.
async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

#[test]
fn an_async_result_completes_when_its_worker_replies_or_dies() {
    with_deadline(LIMIT, || {
        let p = pool(2);
        let name = unique_name("pool-async-go");
        let go = Event::create(&name).unwrap();
        let mut r = p.apply_async(after_event, (name.clone(), 7)).unwrap();
        assert!(
            poll_once(&mut r).is_none(),
            "the worker waits for the event"
        );
        go.set();
        assert_eq!(block_on_for(LIMIT, &mut r), Some(Ok(7)));
        // Polling again gives the same answer, as `get` does.
        assert_eq!(r.get(), Ok(7));

        let dies = p
            .apply_async(|code: i32| -> u32 { std::process::exit(code) }, 3)
            .unwrap();
        match block_on_for(LIMIT, dies) {
            Some(Err(TaskError::WorkerDied { .. })) => {}
            other => panic!("expected WorkerDied, got {other:?}"),
        }
        let all = p.map_async(|x: u64| x + 1, 0..100).unwrap();
        let v = block_on_for(LIMIT, all).unwrap().unwrap();
        assert_eq!(v, (1..=100).collect::<Vec<u64>>());
    });
}

#[test]
fn imap_as_a_stream_yields_what_the_iterator_yields() {
    with_deadline(LIMIT, || {
        let p = pool(2);
        let mut s = p.imap(|x: u64| x * 3, 0..500u64);
        let got = block_on_for(LIMIT, async {
            let mut v = Vec::new();
            while let Some(r) = next(&mut s).await {
                v.push(r.unwrap());
            }
            v
        })
        .unwrap();
        assert_eq!(got, (0..500).map(|x| x * 3).collect::<Vec<u64>>());

        let mut s = p.imap_unordered(|x: u64| x * 3, 0..200u64);
        let mut got = block_on_for(LIMIT, async {
            let mut v = Vec::new();
            while let Some(r) = next(&mut s).await {
                v.push(r.unwrap());
            }
            v
        })
        .unwrap();
        got.sort();
        assert_eq!(got, (0..200).map(|x| x * 3).collect::<Vec<u64>>());
    });
}

#[test]
fn join_async_sees_an_exit_and_a_kill() {
    with_deadline(LIMIT, || {
        let builder = Process::builder().threaded_fork(ThreadedFork::Allow);
        let mut ok = builder.spawn(|x: u64| x * 2, 21).unwrap();
        assert!(matches!(block_on_for(LIMIT, ok.join_async()), Some(Ok(42))));

        let name = unique_name("proc-async-hold");
        let hold = Event::create(&name).unwrap();
        let mut victim = builder.spawn(after_event, (name.clone(), 1)).unwrap();
        {
            let mut join = Box::pin(victim.join_async());
            assert!(poll_once(&mut join).is_none(), "it waits for the event");
        }
        // The dropped join left it running and joinable.
        assert!(victim.is_alive());
        victim.kill().unwrap();
        match block_on_for(LIMIT, victim.join_async()) {
            Some(Err(JoinError::Signaled { signal: 9 })) => {}
            other => panic!("expected Signaled(9), got {other:?}"),
        }
        drop(hold);
    });
}

#[test]
fn select_over_a_result_an_event_and_a_process_returns_the_one_that_happened() {
    with_deadline(LIMIT, || {
        let p = pool(1);
        let name = unique_name("sel-async-go");
        let go = Event::create(&name).unwrap();
        let result = p.apply_async(after_event, (name.clone(), 5)).unwrap();
        let stop = Event::new().unwrap();
        let builder = Process::builder().threaded_fork(ThreadedFork::Allow);
        let hold = unique_name("sel-async-hold");
        let hold_ev = Event::create(&hold).unwrap();
        let child = builder.spawn(after_event, (hold.clone(), 0)).unwrap();
        let sources: [&dyn Waitable; 3] = [&result, &stop, &child];
        assert!(select(&sources, Some(Duration::from_millis(20))).is_empty());

        // The child process exits: only it is ready.
        hold_ev.set();
        assert_eq!(select(&sources, Some(LIMIT)), vec![2]);
        // The task finishes: the result and the (still unjoined) child are ready.
        go.set();
        assert_eq!(
            select(&[&result as &dyn Waitable, &stop], Some(LIMIT)),
            vec![0]
        );
        assert_eq!(result.get(), Ok(5));
        stop.set();
        assert_eq!(select(&sources, Some(LIMIT)), vec![0, 1, 2]);
        let mut child = child;
        assert!(matches!(child.join(), Ok(0)));
    });
}
