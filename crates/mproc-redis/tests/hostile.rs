//! What others write into a queue's Redis keys: garbage, truncated, oversized and tampered
//! entries are refused with a typed error and set aside as dead letters, and the queue goes
//! on; keys of the wrong type are a typed error, not a panic.

use std::time::Duration;

use mproc_queue::{GetError, PutError};
use mproc_redis::Redis;
use mproc_testkit::{RedisServer, with_deadline};

fn raw(s: &RedisServer) -> redis::Connection {
    redis::Client::open(s.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

fn xadd(con: &mut redis::Connection, fields: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("XADD");
    cmd.arg("mproc:{q}:s").arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    let _: String = cmd.query(con).unwrap();
}

#[test]
fn bad_entries_become_dead_letters_and_the_queue_goes_on() {
    with_deadline(Duration::from_secs(60), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let q = r
            .queue("q")
            .max_message_bytes(1000)
            .create::<(u32, String)>()
            .unwrap();
        let mut con = raw(&s);
        let good = |i: u32| (i, format!("m{i}"));
        q.put(good(1)).unwrap();
        // Garbage; a truncated encoding of a good message; no value field at all; one over
        // the consumer's size limit.
        xadd(
            &mut con,
            &[("v", &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), ("h", b"")],
        );
        xadd(&mut con, &[("v", &[2, 2]), ("h", b"")]);
        xadd(&mut con, &[("x", b"y")]);
        xadd(&mut con, &[("v", &vec![1u8; 5000]), ("h", b"")]);
        q.put(good(2)).unwrap();
        assert_eq!(q.get().unwrap(), good(1));
        for _ in 0..4 {
            assert!(matches!(q.get(), Err(GetError::Unreadable { .. })));
        }
        assert_eq!(q.get().unwrap(), good(2));
        q.ack().unwrap();
        assert_eq!(q.len().unwrap(), 0);
        let dead = q.dead_letters(10).unwrap();
        assert_eq!(dead.len(), 4);
        assert!(dead[3].reason.contains("limit"), "{}", dead[3].reason);
        assert_eq!(dead[0].bytes, vec![0xff; 6]);
        // A put over the limit is refused before it is sent, with both sizes.
        match q.put((0, "x".repeat(2000))) {
            Err(PutError::TooLarge { size, max, .. }) => {
                assert!(size > 2000);
                assert_eq!(max, 1000);
            }
            other => panic!("{other:?}"),
        }
        // Keys rewritten with the wrong Redis type: typed errors, no panic.
        let _: () = redis::cmd("SET")
            .arg("mproc:{q}:s")
            .arg("x")
            .query(&mut con)
            .unwrap();
        assert!(matches!(q.put(good(3)), Err(PutError::Unavailable { .. })));
        assert!(matches!(q.try_get(), Err(GetError::Unavailable { .. })));
        let _: () = redis::cmd("SET")
            .arg("mproc:{q}:meta")
            .arg("x")
            .query(&mut con)
            .unwrap();
        assert!(r.queue("q").open::<(u32, String)>().is_err());
    });
}

#[test]
fn a_joinable_queue_counts_a_dead_letter_done() {
    with_deadline(Duration::from_secs(60), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let q = r.queue("q").create_joinable::<u32>().unwrap();
        q.put(1).unwrap();
        let mut con = raw(&s);
        xadd(&mut con, &[("v", &[0xff; 3]), ("h", b"")]);
        // The forged entry was not counted by a put; the count is the puts'.
        let _: () = redis::cmd("INCR")
            .arg("mproc:{q}:n")
            .query(&mut con)
            .unwrap();
        assert_eq!(q.get().unwrap(), 1);
        q.task_done().unwrap();
        assert!(matches!(q.get(), Err(GetError::Unreadable { .. })));
        assert!(q.join_timeout(Duration::from_secs(5)).unwrap());
    });
}
