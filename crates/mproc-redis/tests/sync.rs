//! RedisLock, RedisEvent, RedisValue and RedisAtomic against a real server, with real
//! processes.

use std::time::{Duration, Instant};

use mproc_redis::{Redis, RedisAtomic, RedisError, RedisLockError, RedisValue};
use mproc_testkit::{RedisServer, Signal, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

fn connect(s: &RedisServer) -> Redis {
    Redis::connect(&s.url()).expect("connect")
}

#[test]
fn the_lock_excludes_other_processes() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        // A read-modify-write that loses updates unless the lock excludes the others.
        let v = RedisValue::create(&r, "count", &0u64).unwrap();
        let kids: Vec<_> = (0..3)
            .map(|_| {
                let url = s.url();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let l = r.lock("l").unwrap();
                    let v = RedisValue::<u64>::open(&r, "count").unwrap();
                    let mut last = 0;
                    for _ in 0..30 {
                        let g = l.lock().unwrap();
                        assert!(g.fence() > last, "fences grow");
                        last = g.fence();
                        let n = v.get().unwrap();
                        v.set(&(n + 1)).unwrap();
                        g.release().unwrap();
                    }
                    0
                })
            })
            .collect();
        for k in kids {
            k.assert_success();
        }
        assert_eq!(v.get().unwrap(), 90);
    });
}

#[test]
fn a_killed_holder_is_reported_as_owner_died_after_its_lease() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let lease = Duration::from_millis(300);
        let l = r.lock("l").unwrap().with_lease(lease);
        let held = r.event("held").unwrap();
        let url = s.url();
        let mut holder = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let l = r.lock("l").unwrap().with_lease(lease);
            let g = l.lock().unwrap();
            r.event("held").unwrap().set().unwrap();
            let _ = r.event("never").unwrap().wait();
            drop(g);
            0
        });
        held.wait().unwrap();
        // Held by a live process: not ours to take.
        assert!(matches!(l.try_lock(), Err(RedisLockError::WouldBlock)));
        holder.signal(Signal::KILL);
        holder.wait();
        let t = Instant::now();
        let g = match l.lock_timeout(Duration::from_secs(10)) {
            Err(RedisLockError::OwnerDied(g)) => g,
            other => panic!("expected OwnerDied, got {other:?}"),
        };
        // Taken once the dead holder's lease lapsed, not after some longer timeout.
        assert!(
            t.elapsed() <= lease + Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
        assert!(g.fence() >= 2);
        // Reported until someone declares the data consistent.
        drop(g);
        let g = l.lock().unwrap_err().recover().unwrap();
        g.make_consistent().unwrap();
        drop(g);
        let g = l.try_lock().unwrap();
        g.release().unwrap();
    });
}

#[test]
fn a_holder_keeps_the_lock_past_its_lease_while_it_lives() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let lease = Duration::from_millis(150);
        let l = r.lock("long").unwrap().with_lease(lease);
        let g = l.lock().unwrap();
        let other = connect(&s).lock("long").unwrap();
        // Five leases long, the other client cannot take it.
        assert!(matches!(
            other.lock_timeout(lease * 5),
            Err(RedisLockError::Timeout)
        ));
        assert!(!g.is_lost());
        g.release().unwrap();
        assert!(other.try_lock().is_ok());
    });
}

#[test]
fn an_event_wakes_waiters_in_other_processes() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let e = r.event("go").unwrap();
        let ready = r.queue("ready").create::<u8>().unwrap();
        assert!(!e.is_set().unwrap());
        assert!(!e.wait_timeout(Duration::from_millis(50)).unwrap());
        let kids: Vec<_> = (0..3)
            .map(|_| {
                let url = s.url();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let e = r.event("go").unwrap();
                    r.queue("ready").open::<u8>().unwrap().put(1).unwrap();
                    e.wait().unwrap();
                    0
                })
            })
            .collect();
        for _ in 0..3 {
            ready.get().unwrap();
        }
        e.set().unwrap();
        for k in kids {
            k.assert_success();
        }
        assert!(e.wait_timeout(Duration::ZERO).unwrap());
        e.clear().unwrap();
        assert!(!e.is_set().unwrap());
    });
}

#[test]
fn atomics_add_up_across_processes() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = connect(&s);
        let n = RedisAtomic::create(&r, "n", 0i64).unwrap();
        let f = RedisAtomic::create(&r, "f", 0.0f64).unwrap();
        let kids: Vec<_> = (0..4)
            .map(|_| {
                let url = s.url();
                fork_child(move || {
                    let r = Redis::connect(&url).unwrap();
                    let n = RedisAtomic::<i64>::open(&r, "n").unwrap();
                    let f = RedisAtomic::<f64>::open(&r, "f").unwrap();
                    for _ in 0..50 {
                        n.fetch_add(1).unwrap();
                        f.fetch_add(0.5).unwrap();
                    }
                    0
                })
            })
            .collect();
        for k in kids {
            k.assert_success();
        }
        assert_eq!(n.load().unwrap(), 200);
        assert_eq!(f.load().unwrap(), 100.0);
        assert_eq!(n.compare_exchange(200, 7).unwrap(), Ok(200));
        assert_eq!(n.compare_exchange(200, 8).unwrap(), Err(7));
        assert_eq!(n.swap(9).unwrap(), 7);
        assert_eq!(f.compare_exchange(100.0, 1.5).unwrap(), Ok(100.0));
        assert!(matches!(
            RedisAtomic::<f64>::open(&r, "n"),
            Err(RedisError::Mismatch { .. })
        ));
        // An i64 overflow fails on the server and leaves the value as it was.
        n.store(i64::MAX).unwrap();
        assert!(n.fetch_add(1).is_err());
        assert_eq!(n.load().unwrap(), i64::MAX);
        let v = RedisValue::create(&r, "v", &vec![1u8, 2]).unwrap();
        let r2 = v
            .update(|x| {
                x.push(3);
                x.len()
            })
            .unwrap();
        assert_eq!(r2, 3);
        assert_eq!(v.get().unwrap(), vec![1, 2, 3]);
        assert_eq!(
            v.compare_exchange(&vec![0], &vec![9]).unwrap(),
            Err(vec![1, 2, 3])
        );
        assert!(matches!(
            RedisValue::<u8>::open(&r, "missing"),
            Err(RedisError::NotFound { .. })
        ));
    });
}
