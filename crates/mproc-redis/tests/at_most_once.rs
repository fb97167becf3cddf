//! At-most-once queues (`RedisQueueOptions::at_most_once`): a list on a real redis-server,
//! real processes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError};
use mproc_redis::{Redis, RedisError};
use mproc_testkit::{RedisServer, Signal, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn four_producers_and_four_consumers_deliver_every_message_exactly_once() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let q = r
            .queue("amo")
            .capacity(64)
            .at_most_once()
            .create::<u64>()
            .unwrap();
        let results = r
            .queue("amo-results")
            .capacity(1 << 16)
            .create::<Vec<u64>>()
            .unwrap();
        let url = s.url();
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("amo").open::<u64>().unwrap();
                    for chunk in (p * 5_000..(p + 1) * 5_000).collect::<Vec<_>>().chunks(50) {
                        if chunk[0] % 100 == 0 {
                            for &v in chunk {
                                q.put(v).unwrap();
                            }
                        } else {
                            q.put_many(chunk.to_vec()).unwrap();
                        }
                    }
                    0
                })
            })
            .collect();
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let q = r.queue("amo").open::<u64>().unwrap();
                    let out = r.queue("amo-results").open::<Vec<u64>>().unwrap();
                    let mut got = Vec::new();
                    let mut buf = Vec::new();
                    loop {
                        buf.clear();
                        match q.get_many(&mut buf, 32) {
                            Ok(_) => got.append(&mut buf),
                            Err(GetError::Closed) => break,
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    out.put(got).unwrap();
                    0
                })
            })
            .collect();
        for p in producers {
            p.assert_success();
        }
        q.close().unwrap();
        let mut all = Vec::new();
        for c in consumers {
            c.assert_success();
            all.extend(results.get().unwrap());
        }
        assert_eq!(all.len(), 20_000, "a message delivered twice or lost");
        let distinct: BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct, (0..20_000).collect::<BTreeSet<_>>());
    });
}

#[test]
fn capacity_close_timeouts_and_bad_entries() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::builder(&s.url()).authkey("k").connect().unwrap();
        let q = r
            .queue("amo")
            .capacity(4)
            .at_most_once()
            .create::<String>()
            .unwrap();
        q.put_many(vec!["a".into(), "b".into(), "c".into(), "c2".into()])
            .unwrap();
        assert!(matches!(q.try_put("d".into()), Err(PutError::Full(_))));
        let t = Instant::now();
        assert!(matches!(
            q.put_timeout("d".into(), Duration::from_millis(200)),
            Err(PutError::Timeout(_))
        ));
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert_eq!(q.len().unwrap(), 4);
        let d = q.get_item().unwrap();
        assert_eq!(
            (d.value.as_str(), d.id.as_str(), d.deliveries),
            ("a", "", 1)
        );
        // Taking made room at once: no acknowledgement to wait for.
        q.put("d".into()).unwrap();

        // An entry written by a client without the key, and garbage: refused, set aside,
        // and the queue goes on.
        let mut con = redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg("mproc:{amo}:l")
            .query(&mut con)
            .unwrap();
        for raw in [&b"\x00\x01zz"[..], &b"\xff"[..], &b""[..]] {
            let _: () = redis::cmd("RPUSH")
                .arg("mproc:{amo}:l")
                .arg(raw)
                .query(&mut con)
                .unwrap();
        }
        q.put("e".into()).unwrap();
        let mut refused = 0;
        let got = loop {
            match q.get() {
                Ok(v) => break v,
                Err(GetError::Unreadable { reason }) => {
                    refused += 1;
                    assert!(!reason.is_empty());
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(got, "e");
        assert_eq!(refused, 3);
        assert_eq!(q.dead_letters(10).unwrap().len(), 3);

        // The list rewritten as another type by a hostile client: typed errors, no panic.
        let _: () = redis::cmd("SET")
            .arg("mproc:{amo}:l")
            .arg("not a list")
            .query(&mut con)
            .unwrap();
        assert!(matches!(q.try_get(), Err(GetError::Unavailable { .. })));
        assert!(matches!(
            q.try_put("x".into()),
            Err(PutError::Unavailable { .. })
        ));
        assert!(q.len().is_err());
        let _: () = redis::cmd("DEL")
            .arg("mproc:{amo}:l")
            .query(&mut con)
            .unwrap();

        // Close: the rest drains, then Closed; put fails.
        q.put("f".into()).unwrap();
        q.close().unwrap();
        assert!(matches!(q.put("g".into()), Err(PutError::Closed(_))));
        assert_eq!(q.get().unwrap(), "f");
        assert_eq!(q.get(), Err(GetError::Closed));

        // Kinds: an acknowledged creator or a joinable one is refused; an opener takes it
        // as it is.
        assert!(matches!(
            r.queue("amo").capacity(4).create::<String>(),
            Err(RedisError::Mismatch { what: "kind", .. })
        ));
        assert!(matches!(
            r.queue("other").at_most_once().create_joinable::<String>(),
            Err(RedisError::Invalid { .. })
        ));
        let stats = r.queue_stats("amo").unwrap();
        assert_eq!(stats[0].kind, "plain");
    });
}

#[test]
fn a_blocked_consumer_wakes_for_a_put_and_a_killed_one_loses_only_what_it_took() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let q = r
            .queue("amo")
            .capacity(100)
            .at_most_once()
            .create::<u64>()
            .unwrap();
        let url = s.url();
        let waiter = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("amo").open::<u64>().unwrap();
            let (a, b) = (q.get().unwrap(), q.get().unwrap());
            i32::from((a, b) != (7, 8))
        });
        q.put(7).unwrap();
        q.put(8).unwrap();
        waiter.assert_success();

        let url = s.url();
        let victim = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("amo").open::<u64>().unwrap();
            let _taken = q.get().unwrap();
            r.event("took").unwrap().set().unwrap();
            loop {
                std::thread::park();
            }
        });
        q.put_many((0..10).collect()).unwrap();
        r.event("took").unwrap().wait().unwrap();
        victim.signal(Signal::KILL);
        drop(victim);
        // The message it took is gone for good; the other nine are there, once each.
        let mut rest = Vec::new();
        while let Ok(v) = q.try_get() {
            rest.push(v);
        }
        assert_eq!(rest, (1..10).collect::<Vec<_>>());
    });
}
