//! RedisQueue and RedisJoinableQueue against a real redis-server, with real processes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mproc_queue::{GetError, JoinableMessageQueue, MessageQueue, PutError, Queue};
use mproc_redis::{Redis, RedisError};
use mproc_testkit::{RedisServer, Signal, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

fn connect(s: &RedisServer) -> Redis {
    Redis::connect(&s.url()).expect("connect")
}

#[test]
fn messages_cross_processes_each_delivered_once() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r.queue("work").capacity(8).create::<u64>().unwrap();
        let results = r.queue("results").capacity(1000).create::<u64>().unwrap();
        let url = s.url();
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("work").open::<u64>().unwrap();
                    let out = r.queue("results").open::<u64>().unwrap();
                    loop {
                        match q.get() {
                            Ok(v) => out.put(v).unwrap(),
                            Err(GetError::Closed) => return 0,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        // 200 through a queue of 8: producers wait for room many times.
        q.put_many((0..100).collect()).unwrap();
        for i in 100..200 {
            q.put(i).unwrap();
        }
        q.close().unwrap();
        for c in consumers {
            c.assert_success();
        }
        let mut got = Vec::new();
        while let Ok(v) = results.try_get() {
            got.push(v);
        }
        got.sort();
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        // Every message was acknowledged: the stream is empty.
        assert_eq!(q.len().unwrap(), 0);
        assert!(q.is_closed().unwrap());
        assert!(matches!(q.put(1), Err(PutError::Closed(1))));
    });
}

#[test]
fn a_full_queue_makes_put_wait_until_a_message_is_taken() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r.queue("small").capacity(2).create::<String>().unwrap();
        q.put("a".into()).unwrap();
        q.put("b".into()).unwrap();
        assert_eq!(q.try_put("c".into()), Err(PutError::Full("c".into())));
        let t = Instant::now();
        assert_eq!(
            q.put_timeout("c".into(), Duration::from_millis(150)),
            Err(PutError::Timeout("c".into()))
        );
        assert!(t.elapsed() >= Duration::from_millis(150));
        std::thread::scope(|sc| {
            let waiter = sc.spawn(|| q.put("c".into()));
            // The consumer is another handle (another consumer): its `get` takes "a", its
            // `ack` frees the room the producer waits for.
            let q2 = r.queue("small").open::<String>().unwrap();
            assert_eq!(q2.get().unwrap(), "a");
            assert_eq!(q2.ack().unwrap(), 1);
            waiter.join().unwrap().unwrap();
            assert_eq!(q2.get().unwrap(), "b");
            assert_eq!(q2.get().unwrap(), "c");
        });
    });
}

#[test]
fn close_wakes_a_blocked_consumer_after_the_rest_is_drained() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r.queue("c").create::<u32>().unwrap();
        q.put(7).unwrap();
        q.close().unwrap();
        assert!(matches!(q.put(8), Err(PutError::Closed(8))));
        assert_eq!(q.get().unwrap(), 7);
        assert_eq!(q.get(), Err(GetError::Closed));

        let q = r.queue("c2").create::<u32>().unwrap();
        let url = s.url();
        let child = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("c2").open::<u32>().unwrap();
            // Blocks on an empty queue until the parent closes it.
            match q.get() {
                Err(GetError::Closed) => 0,
                _ => 1,
            }
        });
        assert_eq!(
            q.get_timeout(Duration::from_millis(50)),
            Err(GetError::Timeout)
        );
        assert_eq!(q.try_get(), Err(GetError::Empty));
        q.close().unwrap();
        child.assert_success();
    });
}

#[test]
fn a_consumer_killed_before_acknowledging_has_its_message_delivered_again() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let lease = Duration::from_millis(300);
        let q = r.queue("jobs").lease(lease).create::<u64>().unwrap();
        let taken = r.queue("taken").create::<String>().unwrap();
        q.put_many(vec![10, 11, 12]).unwrap();
        let url = s.url();
        let mut child = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("jobs").open::<u64>().unwrap();
            let taken = r.queue("taken").open::<String>().unwrap();
            let d = q.get_item().unwrap();
            taken.put(d.id).unwrap();
            // Never acknowledges: waits to be killed.
            let _ = r.queue("never").create::<u8>().unwrap().get();
            0
        });
        let id = taken.get().unwrap();
        child.signal(Signal::KILL);
        child.wait();
        let killed_at = Instant::now();
        // The other two come first; the killed consumer's comes back after its lease.
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(q.get_item().unwrap());
        }
        let again = seen.iter().find(|d| d.id == id).expect("redelivered");
        assert!(again.redelivered);
        assert_eq!(again.value, 10);
        assert!(killed_at.elapsed() >= lease / 2);
        let values: BTreeSet<u64> = seen.iter().map(|d| d.value).collect();
        assert_eq!(values, BTreeSet::from([10, 11, 12]));
        assert_eq!(seen.iter().filter(|d| d.redelivered).count(), 1);
        q.ack().unwrap();
        assert_eq!(
            q.get_timeout(Duration::from_millis(2 * lease.as_millis() as u64)),
            Err(GetError::Timeout)
        );
    });
}

#[test]
fn a_live_consumer_keeps_its_lease_while_it_works() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let lease = Duration::from_millis(200);
        let q = r.queue("slow").lease(lease).create::<u8>().unwrap();
        q.put(1).unwrap();
        assert_eq!(q.get().unwrap(), 1);
        // Four leases long, another consumer finds nothing to take: the lease is renewed.
        let other = q.try_clone().unwrap();
        assert_eq!(other.get_timeout(lease * 4), Err(GetError::Timeout));
        assert_eq!(q.ack().unwrap(), 1);
        assert_eq!(other.try_get(), Err(GetError::Empty));
    });
}

#[test]
fn joinable_counts_each_message_done_once_even_when_a_worker_dies() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r
            .queue("tasks")
            .lease(Duration::from_millis(300))
            .create_joinable::<u32>()
            .unwrap();
        let done = r.queue("done").capacity(100).create::<u32>().unwrap();
        q.put_many((0..20).collect()).unwrap();
        assert_eq!(q.unfinished_tasks().unwrap(), 20);
        let url = s.url();
        // One worker takes a task and dies without `task_done`.
        let mut dying = fork_child({
            let url = url.clone();
            move || {
                let r = Redis::connect(&url).unwrap();
                let q = r.queue("tasks").open_joinable::<u32>().unwrap();
                let first = q.get().unwrap();
                let done = r.queue("done").open::<u32>().unwrap();
                done.put(1000 + first).unwrap();
                let _ = r.queue("never").create::<u8>().unwrap().get();
                0
            }
        });
        let died = done.get().unwrap() - 1000;
        dying.signal(Signal::KILL);
        dying.wait();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("tasks").open_joinable::<u32>().unwrap();
                    let done = r.queue("done").open::<u32>().unwrap();
                    loop {
                        match q.get() {
                            Ok(v) => {
                                done.put(v).unwrap();
                                q.task_done().unwrap();
                            }
                            Err(GetError::Closed) => return 0,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        assert!(q.join_timeout(Duration::from_secs(30)).unwrap());
        assert_eq!(q.unfinished_tasks().unwrap(), 0);
        q.close().unwrap();
        for w in workers {
            w.assert_success();
        }
        let mut got = Vec::new();
        while let Ok(v) = done.try_get() {
            got.push(v);
        }
        got.sort();
        assert_eq!(
            got,
            (0..20).collect::<Vec<_>>(),
            "task {died} was redone once"
        );
        // One more task_done than messages is refused, as in Python.
        assert!(matches!(
            q.task_done(),
            Err(mproc_queue::TaskDoneError::TooManyCalls)
        ));
    });
}

// Written once, for any queue: run over shared memory and over Redis below.
fn produce(q: &dyn MessageQueue<String>, n: usize) {
    for i in 0..n {
        q.put(format!("item {i}")).unwrap();
    }
    q.close().unwrap();
}

fn consume(q: &dyn MessageQueue<String>) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        match q.get() {
            Ok(v) => out.push(v),
            Err(GetError::Closed) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn one_producer_and_consumer_run_over_shared_memory_and_redis() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let rq = r.queue("either").capacity(4).create::<String>().unwrap();
        let name = mproc_testkit::unique_name("either");
        let sq = Queue::<String>::create(&name, 4).unwrap();
        let queues: [&(dyn MessageQueue<String> + Sync); 2] = [&sq, &rq];
        for q in queues {
            let got = std::thread::scope(|sc| {
                let c = sc.spawn(|| consume(q));
                produce(q, 30);
                c.join().unwrap()
            });
            assert_eq!(got.len(), 30);
            assert_eq!(got[29], "item 29");
        }
        mproc_segment::Segment::unlink(&name).unwrap();
        let jq = r.queue("j").create_joinable::<u8>().unwrap();
        let jq: &dyn JoinableMessageQueue<u8> = &jq;
        jq.put(1).unwrap();
        assert_eq!(jq.get().unwrap(), 1);
        jq.task_done().unwrap();
        jq.join().unwrap();
    });
}

#[test]
fn bad_names_types_and_missing_queues_are_typed_errors() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        for bad in ["", "a b", "a{b}", &"x".repeat(201)] {
            assert!(matches!(
                r.queue(bad).create::<u8>(),
                Err(RedisError::Invalid { .. })
            ));
        }
        assert!(matches!(
            r.queue("nope").open::<u8>(),
            Err(RedisError::NotFound { .. })
        ));
        r.queue("typed").capacity(5).create::<u64>().unwrap();
        let e = r.queue("typed").open::<String>().unwrap_err();
        assert!(
            matches!(e, RedisError::Mismatch { what: "type", .. }),
            "{e}"
        );
        let e = r.queue("typed").capacity(6).create::<u64>().unwrap_err();
        assert!(
            matches!(
                e,
                RedisError::Mismatch {
                    what: "capacity",
                    ..
                }
            ),
            "{e}"
        );
        let e = r.queue("typed").open_joinable::<u64>().unwrap_err();
        assert!(
            matches!(e, RedisError::Mismatch { what: "kind", .. }),
            "{e}"
        );
        assert!(matches!(
            r.queue("z").capacity(0).create::<u8>(),
            Err(RedisError::Invalid { .. })
        ));
        assert!(r.unlink_queue("typed").unwrap());
        assert!(!r.unlink_queue("typed").unwrap());
        assert!(matches!(
            Redis::connect("not a url"),
            Err(RedisError::Invalid { .. })
        ));
    });
}

#[test]
fn a_dead_server_is_a_typed_error_not_a_hang_or_a_panic() {
    with_deadline(DEADLINE, || {
        let mut s = RedisServer::start();
        let r = connect(&s);
        let q = r.queue("q").create::<u8>().unwrap();
        q.put(1).unwrap();
        s.kill();
        assert!(matches!(
            q.put(2),
            Err(PutError::Unavailable { value: 2, .. })
        ));
        assert!(matches!(q.get(), Err(GetError::Unavailable { .. })));
        assert!(q.len().is_err());
        assert!(matches!(
            Redis::connect(&s.url()),
            Err(RedisError::Unavailable { .. })
        ));
    });
}

#[test]
fn eight_producers_and_eight_consumers_account_for_every_item_once() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r.queue("mpmc").capacity(64).create::<u32>().unwrap();
        let seen = r
            .queue("seen")
            .capacity(100_000)
            .create::<Vec<u32>>()
            .unwrap();
        let url = s.url();
        let producers: Vec<_> = (0..8u32)
            .map(|p| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("mpmc").open::<u32>().unwrap();
                    // Half one at a time, half in batches.
                    for i in 0..100 {
                        q.put(p * 1000 + i).unwrap();
                    }
                    q.put_many((100..200).map(|i| p * 1000 + i).collect())
                        .unwrap();
                    0
                })
            })
            .collect();
        let consumers: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("mpmc").open::<u32>().unwrap();
                    let seen = r.queue("seen").open::<Vec<u32>>().unwrap();
                    let mut got = Vec::new();
                    let mut batch = Vec::new();
                    loop {
                        batch.clear();
                        match q.get_many(&mut batch, 16) {
                            Ok(_) => got.extend_from_slice(&batch),
                            Err(GetError::Closed) => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    q.ack().unwrap();
                    seen.put(got).unwrap();
                    0
                })
            })
            .collect();
        for p in producers {
            p.assert_success();
        }
        q.close().unwrap();
        for c in consumers {
            c.assert_success();
        }
        let mut all = Vec::new();
        for _ in 0..8 {
            all.extend(seen.get().unwrap());
        }
        all.sort();
        let want: Vec<u32> = (0..8u32)
            .flat_map(|p| (0..200).map(move |i| p * 1000 + i))
            .collect();
        assert_eq!(all, want, "every item taken exactly once");
        let stats = r.queue_stats("mpmc").unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!(
            (stats[0].added, stats[0].waiting, stats[0].leased),
            (1600, 0, 0)
        );
    });
}

#[test]
fn acknowledged_entries_leave_the_server_and_capacity_holds_after_many_rounds() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let q = r
            .queue("rounds")
            .capacity(100)
            .lease(Duration::from_millis(500))
            .create::<u64>()
            .unwrap();
        let c = q.try_clone().unwrap();
        let mut buf = Vec::new();
        for round in 0..200u64 {
            q.put_many((round * 100..round * 100 + 100).collect())
                .unwrap();
            assert!(
                matches!(q.try_put(0), Err(PutError::Full(0))),
                "round {round}"
            );
            let mut got = 0;
            while got < 100 {
                buf.clear();
                got += c.get_many(&mut buf, 64).unwrap();
            }
            c.ack().unwrap();
        }
        assert_eq!(q.len().unwrap(), 0);
        // 20,000 entries went through: the stream keeps only about one node of them (it is
        // trimmed in whole nodes), and none is pending.
        let mut con = redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let len: usize = redis::cmd("XLEN")
            .arg("mproc:{rounds}:s")
            .query(&mut con)
            .unwrap();
        assert!(len <= 300, "the stream still holds {len} entries");
        // An entry held by a consumer that went away without acknowledging it is kept (not
        // trimmed with the acknowledged ones after it) until it is delivered again.
        q.put_many((0..50).collect()).unwrap();
        let held = r.queue("rounds").manual_ack().open::<u64>().unwrap();
        assert_eq!(held.get_item().unwrap().value, 0);
        drop(held);
        q.put_many((50..100).collect()).unwrap();
        let mut rest = Vec::new();
        while rest.len() < 99 {
            buf.clear();
            c.get_many(&mut buf, 64).unwrap();
            rest.append(&mut buf);
        }
        c.ack().unwrap();
        assert_eq!(rest, (1..100).collect::<Vec<_>>());
        assert_eq!(q.len().unwrap(), 0, "taken or leased: none waits");
        let again = c.get_item().unwrap();
        assert_eq!((again.value, again.redelivered), (0, true));
        c.ack().unwrap();
        assert!(matches!(c.try_get(), Err(GetError::Empty)));
    });
}
