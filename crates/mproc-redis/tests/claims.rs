//! How a consumer's `get` takes entries: new ones in one round trip outside Lua, and the
//! entries whose lease lapsed by the take script, at least every quarter lease. Against a
//! real redis-server, with real processes.

use std::time::{Duration, Instant};

use mproc_queue::GetError;
use mproc_redis::Redis;
use mproc_testkit::{RedisServer, Signal, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(10);

fn pending(s: &RedisServer, queue: &str) -> i64 {
    let mut con = redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(format!("mproc:{{{queue}}}:s"))
        .arg("mproc")
        .query(&mut con)
        .unwrap();
    match summary {
        redis::Value::Array(v) => match v.first() {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("XPENDING summary: {other:?}"),
        },
        other => panic!("XPENDING summary: {other:?}"),
    }
}

#[test]
fn a_consumer_that_never_runs_dry_still_takes_over_a_dead_consumers_entry() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let lease = Duration::from_millis(250);
        let q = r
            .queue("busy")
            .capacity(1 << 20)
            .lease(lease)
            .create::<u64>()
            .unwrap();
        let taken = r.queue("taken").create::<String>().unwrap();
        q.put(0).unwrap();
        let url = s.url();
        let mut child = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("busy").open::<u64>().unwrap();
            let d = q.get_item().unwrap();
            r.queue("taken")
                .open::<String>()
                .unwrap()
                .put(d.id)
                .unwrap();
            // Never acknowledges: waits to be killed.
            let _ = r.queue("never").create::<u8>().unwrap().get();
            0
        });
        let id = taken.get().unwrap();
        // Far more than this consumer drains in a lease: it always finds new entries, so
        // only the periodic claim can hand it the dead consumer's entry before the end.
        const N: u64 = 300_000;
        for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
            q.put_many(chunk.to_vec()).unwrap();
        }
        // The consumer is under way (its first call claimed nothing: the child renews its
        // lease) when the child dies.
        let first = q.get_items(64, Some(WAIT)).unwrap();
        assert!(first.iter().all(|d| d.value != 0));
        child.signal(Signal::KILL);
        child.wait();
        let killed_at = Instant::now();
        let (mut before, mut found) = (first.len() as u64, None);
        while found.is_none() {
            for d in q.get_items(64, Some(WAIT)).unwrap() {
                if d.value == 0 {
                    assert_eq!(d.id, id);
                    assert!(d.redelivered);
                    found = Some(killed_at.elapsed());
                } else {
                    before += 1;
                }
            }
        }
        assert!(
            before < N - 1000,
            "the dead consumer's entry came only after {before} of {N} new ones: the busy \
             consumer did not claim it while new entries waited"
        );
        // Drain the rest; every entry arrives, and nothing stays pending.
        let mut rest = before;
        while rest < N {
            rest += q.get_items(1000, Some(WAIT)).unwrap().len() as u64;
        }
        q.ack().unwrap();
        assert_eq!(q.len().unwrap(), 0);
        assert_eq!(pending(&s, "busy"), 0);
        // The child renewed its lease every third of it: it lapsed at least 2/3 lease after
        // the kill.
        assert!(
            found.unwrap() >= lease / 2,
            "claimed before its lease lapsed"
        );
    });
}

#[test]
fn a_server_that_lost_its_scripts_delivers_every_entry_without_waiting_a_lease() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let lease = Duration::from_secs(20);
        let q = r.queue("flushed").lease(lease).create::<u64>().unwrap();
        q.put_many((0..200).collect()).unwrap();
        let mut con = redis::Client::open(s.url())
            .unwrap()
            .get_connection()
            .unwrap();
        let started = Instant::now();
        let (mut got, mut buf) = (Vec::new(), Vec::new());
        while got.len() < 200 {
            // Between every two calls the server forgets its scripts (as after a restart):
            // the acknowledgement sent with the next read fails, the read does not.
            let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
            buf.clear();
            q.get_many(&mut buf, 64).unwrap();
            got.append(&mut buf);
        }
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert!(
            started.elapsed() < lease / 4,
            "an entry waited for its lease: {:?}",
            started.elapsed()
        );
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
        q.ack().unwrap();
        assert_eq!(pending(&s, "flushed"), 0);
        assert_eq!(q.len().unwrap(), 0);
        assert_eq!(q.try_get(), Err(GetError::Empty));
    });
}

#[test]
fn acknowledgements_sent_later_ride_on_the_next_read_and_are_lost_only_with_the_consumer() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let lease = Duration::from_millis(300);
        let q = r
            .queue("later")
            .lease(lease)
            .manual_ack()
            .create::<u64>()
            .unwrap();
        for i in 0..3 {
            q.put(i).unwrap();
        }
        // Acknowledged later: still pending until the next read carries it.
        let a = q.get_items(1, None).unwrap().remove(0);
        q.ack_items_later(std::slice::from_ref(&a.id));
        assert_eq!(pending(&s, "later"), 1);
        let b = q.get_items(1, None).unwrap().remove(0);
        assert_eq!(pending(&s, "later"), 1, "the read acknowledged the first");
        // Dropping the handle sends what is still owed.
        q.ack_items_later(std::slice::from_ref(&b.id));
        drop(q);
        assert_eq!(pending(&s, "later"), 0);

        // A consumer killed before its next read: the message comes back after its lease.
        let url = s.url();
        let mut child = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("later").manual_ack().open::<u64>().unwrap();
            let d = q.get_items(1, None).unwrap().remove(0);
            q.ack_items_later(&[d.id]);
            r.queue("said")
                .create::<u64>()
                .unwrap()
                .put(d.value)
                .unwrap();
            let _ = r.queue("never").create::<u8>().unwrap().get();
            0
        });
        let said = r.queue("said").create::<u64>().unwrap();
        let v = said.get_timeout(WAIT).unwrap();
        assert_eq!(v, 2);
        child.signal(Signal::KILL);
        child.wait();
        let q = r.queue("later").manual_ack().open::<u64>().unwrap();
        let t = Instant::now();
        let again = loop {
            match q.get_items(1, Some(Duration::from_millis(100))) {
                Ok(mut got) if !got.is_empty() => break got.remove(0),
                Ok(_) | Err(GetError::Timeout | GetError::Empty) => {}
                Err(e) => panic!("{e}"),
            }
            assert!(t.elapsed() < WAIT, "not delivered again");
        };
        assert_eq!((again.value, again.redelivered), (2, true));
        q.ack_item(&again.id).unwrap();
        assert_eq!(pending(&s, "later"), 0);
    });
}
