//! Liveness decided by the kernel (mproc_segment::liveness), across real processes and real
//! pid namespaces: peers in another pid namespace (with and without a `/proc` of their own)
//! are neither taken for dead while they live nor for alive once they die; a recycled pid is
//! never the owner of a dead holder's lock; loops of short timeouts recover dead peers'
//! slots and chunks; openers and reclaimers never end up on different files.
//!
//! The namespace tests need root (CI runs as root): `unshare(CLONE_NEWPID)` in a forked child.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use mproc::prelude::*;
use mproc_testkit::{Child, fork_child, fork_in_pid_namespace, unique_name, with_deadline};
use rustix::process::Signal;

const DEADLINE: Duration = Duration::from_secs(60);

/// Waits (bounded) for one byte from a child; panics if none comes.
fn await_byte(s: &mut UnixStream) -> u8 {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("the child never reported");
    b[0]
}

/// In a child: reports one byte, then blocks until the parent writes one (or goes away).
fn report_and_hold(s: &mut UnixStream, byte: u8) {
    let _ = s.write_all(&[byte]);
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
}

/// Leaves a stale segment under `name`: its creator kept it (`persist`) and exited, and
/// nobody holds it.
fn make_stale(name: &str) {
    let n = name.to_owned();
    fork_child(move || match Segment::create(&n, 64) {
        Ok(mut s) => {
            s.persist();
            0
        }
        Err(_) => 1,
    })
    .assert_success();
}

fn kill(mut child: Child) {
    child.signal(Signal::KILL);
    child.wait();
}

fn lock_held_in_another_namespace(own_proc: bool) {
    with_deadline(DEADLINE, || {
        let name = unique_name("ns-lock");
        let lock = Lock::create(&name).unwrap();
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let n = name.clone();
        let child = fork_in_pid_namespace(own_proc, move || {
            let l = Lock::open(&n).unwrap();
            let _g = l.lock().unwrap();
            // Pid 1 of its namespace: a pid that means nothing (or something else) here.
            report_and_hold(&mut there, std::process::id() as u8);
            0
        });
        assert_eq!(
            await_byte(&mut here),
            1,
            "the holder is its namespace's init"
        );
        // A live holder in another namespace: never granted to anyone else, however long we
        // wait (the old pid check took it over after 20 ms).
        for _ in 0..3 {
            assert!(matches!(
                lock.lock_timeout(Duration::from_millis(150)),
                Err(LockError::Timeout)
            ));
            assert!(matches!(lock.try_lock(), Err(LockError::WouldBlock)));
        }
        kill(child);
        // Its death is seen from here: the next locker is told.
        match lock.lock_timeout(Duration::from_secs(10)) {
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            other => panic!("expected OwnerDied, got {:?}", other.map(drop)),
        }
        assert!(lock.lock().is_ok());
    });
}

#[test]
fn a_lock_held_in_another_pid_namespace_is_never_granted_twice() {
    lock_held_in_another_namespace(false);
}

#[test]
fn a_lock_held_in_a_namespace_with_its_own_proc_is_never_granted_twice() {
    lock_held_in_another_namespace(true);
}

#[test]
fn a_producer_in_another_pid_namespace_loses_nothing() {
    with_deadline(DEADLINE, || {
        let name = unique_name("ns-producer");
        let q = PodQueue::<u64>::create(&name, 64).unwrap();
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let n = name.clone();
        const N: u64 = 5_000;
        let mut child = fork_in_pid_namespace(true, move || {
            let q = PodQueue::<u64>::open(&n).unwrap();
            // Claim a slot and keep it while the parent looks: a live producer's slot.
            let mut loan = q.loan().unwrap();
            *loan = 0;
            report_and_hold(&mut there, 1);
            loan.send();
            for i in 1..=N {
                q.put(i).unwrap();
            }
            0
        });
        await_byte(&mut here);
        // The claimed slot is a live producer's: not skipped, however often we look.
        for _ in 0..4 {
            assert!(matches!(
                q.get_timeout(Duration::from_millis(60)),
                Err(GetError::Timeout)
            ));
        }
        here.write_all(&[1]).unwrap();
        let got: Vec<u64> = (0..=N).map(|_| q.get().unwrap()).collect();
        assert_eq!(got, (0..=N).collect::<Vec<_>>(), "exactly once, in order");
        assert_eq!(q.stats().dead_skipped, 0);
        assert_eq!(child.wait().exit, mproc_testkit::Exit::Code(0));
    });
}

#[test]
fn reclaim_from_a_namespace_with_its_own_proc_spares_live_segments() {
    with_deadline(DEADLINE, || {
        let live = unique_name("ns-live");
        let dead = unique_name("ns-dead");
        let seg = Segment::create(&live, 64).unwrap();
        seg.write_bytes(0, b"live").unwrap();
        // A segment kept by a creator that then died, and that nobody holds: stale.
        make_stale(&dead);
        let (l, d) = (live.clone(), dead.clone());
        let mut child = fork_in_pid_namespace(true, move || {
            // The creator of `live` is not visible here (another namespace, another /proc).
            if !matches!(
                Segment::create(&l, 64),
                Err(SegmentError::AlreadyExists { .. })
            ) {
                return 1;
            }
            if mproc::segment::remove_stale(&l) {
                return 2;
            }
            // The dead one is reclaimed: created anew under its name (and unlinked on drop).
            match Segment::create(&d, 64) {
                Ok(_) => 0,
                Err(_) => 3,
            }
        });
        assert_eq!(child.wait().exit, mproc_testkit::Exit::Code(0));
        // Still the same segment under the same name.
        let again = Segment::open(&live).unwrap();
        let mut b = [0u8; 4];
        again.read_bytes(0, &mut b).unwrap();
        assert_eq!(&b, b"live");
        assert!(matches!(
            Segment::open(&dead),
            Err(SegmentError::NotFound { .. })
        ));
    });
}

/// In a pid namespace whose `pid_max` is small, pids come round within a few hundred forks:
/// a process that inherits a dead holder's pid is not its owner (neither `EDEADLK` on a Lock
/// nor a silent re-entry of an RLock), and is told the holder died.
#[test]
fn a_recycled_pid_never_owns_a_dead_holders_lock() {
    with_deadline(DEADLINE, || {
        let (plain, re) = (unique_name("reuse-lock"), unique_name("reuse-rlock"));
        let _lock = Lock::create(&plain).unwrap();
        let _rlock = RLock::create(&re).unwrap();
        let (p, r) = (plain.clone(), re.clone());
        let mut child = fork_in_pid_namespace(true, move || recycle_pids(&p, &r));
        assert_eq!(child.wait().exit, mproc_testkit::Exit::Code(0));
    });
}

/// Runs as pid 1 of a fresh namespace with its own /proc; returns 0 when all held.
fn recycle_pids(plain: &str, re: &str) -> i32 {
    use mproc_testkit::{Exit, Forked, exit_now, fork};
    if std::fs::write("/proc/sys/kernel/pid_max", "400").is_err() {
        return 10; // needs Linux 6.14+ (a pid_max per namespace)
    }
    // Forks a child running `f`, returns its pid (the child `_exit`s with f's code).
    let spawn = |f: &dyn Fn() -> i32| -> i32 {
        // SAFETY: the child runs `f` and `_exit`s; this process has one thread.
        match unsafe { fork() } {
            Ok(Forked::Child) => exit_now(f()),
            Ok(Forked::Parent(child)) => child,
            Err(_) => -1,
        }
    };
    let reap = |pid: i32| match mproc_testkit::waitpid(pid) {
        Some(Exit::Code(c)) => c,
        Some(Exit::Signaled(_)) => -2,
        None => -3,
    };
    // Move the pid counter into the range that is reused after a wrap (300..400).
    loop {
        let pid = spawn(&|| 0);
        if pid < 0 {
            return 11;
        }
        reap(pid);
        if pid >= 300 {
            break;
        }
    }
    // The holder takes both locks and is killed holding them.
    let (mut a, b) = UnixStream::pair().unwrap();
    let holder = spawn(&|| {
        let (Ok(l), Ok(r)) = (Lock::open(plain), RLock::open(re)) else {
            return 1;
        };
        let (Ok(_g), Ok(_h)) = (l.lock(), r.lock()) else {
            return 2;
        };
        let mut b2 = b.try_clone().unwrap();
        report_and_hold(&mut b2, 1);
        0
    });
    if holder < 0 {
        return 12;
    }
    if await_byte(&mut a) != 1 {
        return 13;
    }
    mproc_testkit::kill(holder, Signal::KILL);
    reap(holder);
    drop(b);
    // Fork until a child gets the holder's pid; it must not be taken for the owner.
    for _ in 0..1000 {
        let pid = spawn(&|| {
            if std::process::id() as i32 != holder {
                return 100; // not the recycled one
            }
            let (Ok(l), Ok(r)) = (Lock::open(plain), RLock::open(re)) else {
                return 3;
            };
            let plain_ok = matches!(l.try_lock(), Err(LockError::OwnerDied(_)));
            let re_ok = matches!(r.lock(), Err(LockError::OwnerDied(_)));
            match (plain_ok, re_ok) {
                (true, true) => 0,
                (false, _) => 4,
                (_, false) => 5,
            }
        });
        if pid < 0 {
            return 14;
        }
        let code = reap(pid);
        if pid == holder {
            return code;
        }
        if code != 100 {
            return 15;
        }
    }
    16 // the pid never came round
}

/// A producer killed while it holds a claimed slot: a consumer that only ever waits 50 ms
/// at a time gets the next item as soon as one blocking `get` would.
#[test]
fn short_get_timeouts_skip_a_dead_producers_slot() {
    with_deadline(DEADLINE, || {
        let q = PodQueue::<u64>::new(8).unwrap();
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let child = fork_child(|| {
            let _loan = q.loan().unwrap();
            report_and_hold(&mut there, 1);
            0
        });
        await_byte(&mut here);
        q.put(7).unwrap();
        kill(child);
        let start = Instant::now();
        let got = loop {
            match q.get_timeout(Duration::from_millis(50)) {
                Ok(v) => break v,
                Err(GetError::Timeout) => assert!(start.elapsed() < Duration::from_secs(5)),
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(got, 7);
        assert_eq!(q.stats().dead_skipped, 1);
    });
}

/// A consumer killed while it reads a slot of a full ring: a producer that waits 50 ms at a
/// time gets its item in.
#[test]
fn short_put_timeouts_reclaim_a_dead_readers_slot() {
    with_deadline(DEADLINE, || {
        let q = PodQueue::<u64>::new(2).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let child = fork_child(|| {
            let _m = q.get_loan().unwrap();
            report_and_hold(&mut there, 1);
            0
        });
        await_byte(&mut here);
        kill(child);
        let start = Instant::now();
        let mut v = 3;
        loop {
            match q.put_timeout(v, Duration::from_millis(50)) {
                Ok(()) => break,
                Err(PutError::Timeout(back)) => {
                    v = back;
                    assert!(start.elapsed() < Duration::from_secs(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(q.get().unwrap(), 2);
        assert_eq!(q.get().unwrap(), 3);
        assert_eq!(q.stats().dead_reclaimed, 1);
    });
}

/// A producer killed while it holds most of the arena (a loan): a producer that waits
/// 50 ms at a time gets its body in.
#[test]
fn short_put_timeouts_reclaim_a_dead_producers_chunk() {
    with_deadline(DEADLINE, || {
        let q = QueueOptions::new()
            .capacity(8)
            .slot_size(64)
            .arena_bytes(64 * 1024)
            .anonymous_bytes()
            .unwrap();
        let big = q.arena_bytes() as usize * 3 / 4;
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let child = fork_child(|| {
            let _loan = q.loan(big).unwrap();
            report_and_hold(&mut there, 1);
            0
        });
        await_byte(&mut here);
        kill(child);
        let body = vec![5u8; big];
        let start = Instant::now();
        let mut b = body.clone();
        loop {
            match q.put_timeout(b, Duration::from_millis(50)) {
                Ok(()) => break,
                Err(PutError::Timeout(back)) => {
                    b = back;
                    assert!(start.elapsed() < Duration::from_secs(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(q.get().unwrap(), body);
    });
}

/// `create` of a name this very process holds open is `AlreadyExists`, even when the
/// segment's creator is dead (the caller's own handle counts as a user).
#[test]
fn create_of_a_name_the_caller_holds_is_already_exists() {
    with_deadline(DEADLINE, || {
        let name = unique_name("held-by-me");
        make_stale(&name);
        let mine = Segment::open(&name).unwrap();
        assert!(matches!(
            Segment::create(&name, 64),
            Err(SegmentError::AlreadyExists { .. })
        ));
        assert!(!mproc::segment::remove_stale(&name));
        drop(mine);
        // Nobody holds it now and its creator is dead: stale, and a create reclaims it.
        let fresh = Segment::create(&name, 64).unwrap();
        drop(fresh);
    });
}

/// Openers racing a reclaimer, 1000 rounds: whoever wins, an opener's segment is the one
/// under the name when it returns (never an unlinked file).
#[test]
fn openers_and_reclaimers_never_split_a_name() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    with_deadline(Duration::from_secs(120), || {
        let name = unique_name("reclaim-race");
        let path = format!("/dev/shm/{name}");
        let mut opened = 0;
        for _ in 0..1000 {
            // A stale segment: its creator persisted it and exited.
            make_stale(&name);
            let n = name.clone();
            let opener = std::thread::spawn(move || Segment::open(&n).ok());
            let created = Segment::create(&name, 64);
            let held = opener.join().unwrap();
            let on_disk = std::fs::metadata(&path).ok().map(|m| m.ino());
            let ino_of = |s: &Segment| rustix::fs::fstat(s.as_fd()).unwrap().st_ino;
            if let Ok(c) = &created {
                assert_eq!(
                    Some(ino_of(c)),
                    on_disk,
                    "the creator's file is not the named one"
                );
            }
            if let Some(seg) = &held {
                opened += 1;
                // The stale file (the creator then failed: someone held it) or the new one.
                assert_eq!(
                    Some(ino_of(seg)),
                    on_disk,
                    "the opener holds an unlinked file"
                );
            }
            drop(held);
            drop(created);
            let _ = Segment::unlink(&name);
        }
        // Both outcomes happen (not a test of one path only).
        assert!(opened > 0, "the opener never won");
    });
}

/// Removes a name however the test ends.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

/// A holder that is not dumpable (its `/proc/PID/maps` cannot be read, as for mproc's own
/// pool workers) — of this user and of another — counts as a user of the segment for
/// reclaim, `gc` and `inspect`; once it dies, the segment is stale.
#[test]
fn non_dumpable_holders_count_as_users_also_of_another_uid() {
    with_deadline(DEADLINE, || {
        for other_uid in [false, true] {
            let name = unique_name("nondumpable");
            let _cleanup = Unlink(name.clone());
            let (mut here, mut there) = UnixStream::pair().unwrap();
            let n = name.clone();
            let child = fork_child(move || {
                let _ = rustix::process::set_dumpable_behavior(
                    rustix::process::DumpableBehavior::NotDumpable,
                );
                if other_uid && !mproc_testkit::become_nobody() {
                    return 2;
                }
                let Ok(mut seg) = Segment::create(&n, 64) else {
                    return 3;
                };
                seg.persist();
                report_and_hold(&mut there, 1);
                0
            });
            await_byte(&mut here);
            let p = mproc::segment::peek(&name).unwrap();
            assert_eq!(p.owner, if other_uid { 65534 } else { 0 });
            assert_eq!(p.in_use, Some(true), "other uid: {other_uid}");
            assert_eq!(p.creator_alive, Some(true), "other uid: {other_uid}");
            assert!(!mproc::segment::remove_stale(&name));
            if !other_uid {
                assert!(matches!(
                    Segment::create(&name, 64),
                    Err(SegmentError::AlreadyExists { .. })
                ));
            }
            kill(child);
            let p = mproc::segment::peek(&name).unwrap();
            assert_eq!(p.in_use, Some(false), "other uid: {other_uid}");
            assert_eq!(p.creator_alive, Some(false), "other uid: {other_uid}");
            // Stale now: root's gc rule removes it (its own, or another user's).
            assert!(
                mproc::segment::remove_stale(&name),
                "other uid: {other_uid}"
            );
        }
    });
}

/// A process forked by a lock holder that never touches mproc (it inherited the holder's
/// roll descriptors) does not keep the holder "alive": once the holder dies, the next locker
/// is told, while that child still runs.
#[test]
fn a_forked_child_does_not_keep_its_dead_parent_alive() {
    with_deadline(DEADLINE, || {
        let name = unique_name("fork-keeps-alive");
        let lock = Lock::create(&name).unwrap();
        let (mut here, mut there) = UnixStream::pair().unwrap();
        let n = name.clone();
        let holder = fork_child(move || {
            let l = Lock::open(&n).unwrap();
            let _g = l.lock().unwrap();
            // A child that only sleeps (a worker of some other library, say).
            // SAFETY: the grandchild only sleeps and `_exit`s.
            let sleeper = match unsafe { mproc_testkit::fork() } {
                Ok(mproc_testkit::Forked::Child) => {
                    std::thread::sleep(Duration::from_secs(30));
                    mproc_testkit::exit_now(0)
                }
                Ok(mproc_testkit::Forked::Parent(child)) => child as u32,
                Err(_) => return 1,
            };
            let _ = there.write_all(&sleeper.to_ne_bytes());
            report_and_hold(&mut there, 1);
            0
        });
        here.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut b = [0u8; 4];
        here.read_exact(&mut b).unwrap();
        let sleeper = mproc::segment::ProcessId::of(u32::from_ne_bytes(b)).unwrap();
        await_byte(&mut here);
        kill(holder);
        assert!(sleeper.is_alive(), "the sleeping child still runs");
        match lock.lock_timeout(Duration::from_secs(10)) {
            Err(LockError::OwnerDied(g)) => g.make_consistent(),
            other => panic!("expected OwnerDied, got {:?}", other.map(drop)),
        }
        mproc_testkit::kill(sleeper.pid as i32, Signal::KILL);
        assert!(mproc_testkit::gone_within(Duration::from_secs(10), || {
            sleeper.is_alive()
        }));
    });
}
