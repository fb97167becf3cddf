//! A redis-server killed with SIGKILL and restarted: with `appendonly yes` and
//! `appendfsync always`, no acknowledged put is lost; while it is down, calls fail with
//! typed errors within their time; afterwards the same handles work again.

use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError};
use mproc_redis::Redis;
use mproc_testkit::{RedisServer, with_deadline};

#[test]
fn no_acknowledged_put_is_lost_when_the_server_is_killed_and_restarted() {
    with_deadline(Duration::from_secs(60), || {
        let mut s = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        let r = Redis::connect(&s.url()).unwrap();
        let q = r.queue("durable").create::<u32>().unwrap();
        for i in 0..100 {
            q.put(i).unwrap();
        }
        q.put_many((100..200).collect()).unwrap();
        // Taken and acknowledged (by the next get): gone for good.
        assert_eq!(q.get().unwrap(), 0);
        assert_eq!(q.get().unwrap(), 1);
        s.kill();

        let t = Instant::now();
        assert!(matches!(
            q.put_timeout(7, Duration::from_millis(200)),
            Err(PutError::Unavailable { value: 7, .. })
        ));
        assert!(matches!(
            q.get_timeout(Duration::from_millis(200)),
            Err(GetError::Unavailable { .. })
        ));
        assert!(q.len().is_err());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

        s.restart();
        // The same handle reconnects. 1 was taken, and its acknowledgement (the `get` that
        // failed while the server was down) is kept and sent with the next call: 1 is not
        // delivered again, and everything from 2 on is there.
        let mut got = Vec::new();
        while let Ok(v) = q.try_get() {
            got.push(v);
        }
        assert_eq!(got, (2..200).collect::<Vec<_>>());
        q.put(500).unwrap();
        assert_eq!(q.get().unwrap(), 500);
    });
}
