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
        // The first call may fail once, on a connection that died with the old server.
        let mut got = Vec::new();
        let mut failed = 0;
        loop {
            match q.try_get() {
                Ok(v) => got.push(v),
                Err(GetError::Empty) => break,
                Err(GetError::Unavailable { .. }) if failed == 0 => failed += 1,
                Err(e) => panic!("{e:?} after {} messages", got.len()),
            }
        }
        assert_eq!(got, (2..200).collect::<Vec<_>>());
        q.put(500).unwrap();
        assert_eq!(q.get().unwrap(), 500);
    });
}

#[test]
fn calls_with_a_timeout_return_soon_after_it_while_the_server_hangs() {
    with_deadline(Duration::from_secs(60), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let q = r.queue("hung").capacity(4).create::<u32>().unwrap();
        q.put(1).unwrap();
        s.pause();
        // The server accepts nothing and answers nothing: every call with a timeout fails
        // as Unavailable within its timeout and a second of grace, and loses nothing.
        let limit = Duration::from_millis(300) + Duration::from_secs(2);
        let t = Instant::now();
        assert!(matches!(
            q.put_timeout(2, Duration::from_millis(300)),
            Err(PutError::Unavailable { value: 2, .. })
        ));
        assert!(t.elapsed() < limit, "put_timeout took {:?}", t.elapsed());
        let t = Instant::now();
        assert!(matches!(
            q.get_timeout(Duration::from_millis(300)),
            Err(GetError::Unavailable { .. })
        ));
        assert!(t.elapsed() < limit, "get_timeout took {:?}", t.elapsed());
        // A new client: connecting is bounded by its connect timeout.
        let t = Instant::now();
        let fresh = Redis::builder(&s.url())
            .connect_timeout(Duration::from_millis(300))
            .connect();
        assert!(matches!(
            fresh,
            Err(mproc_redis::RedisError::Unavailable { .. })
        ));
        assert!(t.elapsed() < limit, "connect took {:?}", t.elapsed());

        s.resume();
        // The same handle goes on: the put that failed did not happen or did (at least
        // once); the message put before the pause is there.
        let mut got = Vec::new();
        while let Ok(v) = q.try_get() {
            got.push(v);
        }
        assert!(got == [1] || got == [1, 2], "{got:?}");
        q.put(3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
    });
}
