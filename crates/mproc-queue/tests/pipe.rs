//! `pipe()` across real processes: both directions, messages of every size, end-of-file on
//! close and on the peer's death (SIGKILL, another pid namespace), the forked-copies rule,
//! one-way pipes, garbage from a peer, and the select source and futures.

use std::time::{Duration, Instant};

use mproc_queue::{GetError, PutError, QueueOptions, pipe};
use mproc_testkit::{Exit, Signal, block_on_for, fork_child, fork_in_pid_namespace, with_deadline};

const LONG: Duration = Duration::from_secs(60);
/// How soon end-of-file must show after the peer is gone (the peer check runs every 50 ms).
const EOF_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Job {
    id: u64,
    name: String,
    body: Vec<u8>,
}

#[test]
fn a_duplex_pipe_carries_values_and_bytes_both_ways_then_ends_when_the_child_exits() {
    with_deadline(LONG, || {
        let (a, b) = QueueOptions::new()
            .capacity(16)
            .arena_bytes(8 << 20)
            .pipe(true)
            .unwrap();
        let sizes = [0usize, 1, 100, 4096, 65_536, 1 << 20];
        // The closure owns `b`: the parent's copy is dropped with it after the fork.
        let mut child = fork_child(move || {
            let mut buf = Vec::new();
            for i in 0..600u64 {
                let job: Job = match b.recv() {
                    Ok(j) => j,
                    Err(_) => return 1,
                };
                if job.id != i || job.body.len() != sizes[i as usize % sizes.len()] {
                    return 2;
                }
                if b.recv_bytes_into(&mut buf).is_err() || buf != job.name.as_bytes() {
                    return 3;
                }
                if b.send(&(job.id * 2)).is_err() {
                    return 4;
                }
            }
            0
        });
        for i in 0..600u64 {
            let len = sizes[i as usize % sizes.len()];
            let job = Job {
                id: i,
                name: format!("job-{i}"),
                body: vec![i as u8; len],
            };
            a.send(&job).unwrap();
            a.send_bytes(job.name.as_bytes()).unwrap();
            assert_eq!(a.recv::<u64>().unwrap(), i * 2);
        }
        assert_eq!(child.wait_deadline(LONG).exit, Exit::Code(0));
        // The child's end is gone with it: end-of-file, at once.
        let t = Instant::now();
        assert_eq!(a.recv_bytes(), Err(GetError::Closed));
        assert!(t.elapsed() < EOF_WITHIN);
        assert!(!a.peer_open());
    });
}

#[test]
fn messages_sent_before_a_close_are_received_then_end_of_file_while_the_peer_lives() {
    with_deadline(LONG, || {
        let (a, b) = pipe(true).unwrap();
        let (hold_a, hold_b) = pipe(true).unwrap();
        // The closure owns `b` and `hold_b`: the parent's copies go with it after the fork.
        let mut child = fork_child(move || {
            for i in 0..3u32 {
                if b.send(&i).is_err() {
                    return 1;
                }
            }
            drop(b);
            // Stays alive until told to go: the end-of-file comes from the close.
            match hold_b.recv::<()>() {
                Ok(()) => 0,
                Err(_) => 2,
            }
        });
        for i in 0..3u32 {
            assert_eq!(a.recv::<u32>().unwrap(), i);
        }
        assert_eq!(a.recv::<u32>(), Err(GetError::Closed));
        assert!(
            a.poll(Some(Duration::ZERO)).unwrap(),
            "end-of-file polls ready"
        );
        // Sending to the closed end fails once the ring is full (an OS pipe's EPIPE).
        let mut sent = 0;
        let err = loop {
            match a.send_bytes_timeout(vec![0u8; 64], LONG) {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, PutError::Closed(_)), "{err:?} after {sent}");
        hold_a.send(&()).unwrap();
        assert_eq!(child.wait_deadline(LONG).exit, Exit::Code(0));
    });
}

#[test]
fn a_peer_killed_mid_conversation_shows_as_end_of_file_to_a_blocked_recv_and_send() {
    with_deadline(LONG, || {
        for round in 0..10 {
            let (a, b) = QueueOptions::new().capacity(4).pipe(true).unwrap();
            let child = fork_child(move || {
                let _ = b.send(&"ready");
                // Never reads: the parent's sends fill the ring and block.
                loop {
                    std::thread::park();
                }
            });
            assert_eq!(a.recv::<String>().unwrap(), "ready");
            let reader = std::thread::scope(|s| {
                let blocked_recv = s.spawn(|| {
                    let t = Instant::now();
                    (a.recv_bytes(), t)
                });
                let blocked_send = s.spawn(|| {
                    loop {
                        match a.send_bytes(vec![1u8; 10]) {
                            Ok(()) => continue,
                            Err(e) => return e,
                        }
                    }
                });
                // Kill while both wait, at a different moment each round.
                std::thread::sleep(Duration::from_millis(5 * round));
                child.signal(Signal::KILL);
                let killed = Instant::now();
                let (got, _) = blocked_recv.join().unwrap();
                assert_eq!(got, Err(GetError::Closed), "round {round}");
                assert!(matches!(blocked_send.join().unwrap(), PutError::Closed(_)));
                killed.elapsed()
            });
            assert!(reader < EOF_WITHIN, "end-of-file after {reader:?}");
            let mut child = child;
            assert_eq!(child.wait_deadline(LONG).exit, Exit::Signaled(9));
        }
    });
}

#[test]
fn an_end_still_open_in_a_forked_copy_keeps_the_pipe_open() {
    with_deadline(LONG, || {
        let (a, b) = pipe(true).unwrap();
        // The child gets a copy of `b` by fork, and the parent keeps its own.
        let b_for_child = b.try_clone().unwrap();
        let mut child = fork_child(move || {
            let _ = b_for_child.send(&1u8);
            0
        });
        assert_eq!(a.recv::<u8>().unwrap(), 1);
        assert_eq!(child.wait_deadline(LONG).exit, Exit::Code(0));
        // The parent's own copy of the child's end is still open: no end-of-file, as with
        // an OS pipe whose write end the parent forgot to close.
        assert_eq!(
            a.recv_bytes_timeout(Duration::from_millis(200)),
            Err(GetError::Timeout)
        );
        drop(b);
        assert_eq!(a.recv_bytes(), Err(GetError::Closed));
    });
}

#[test]
fn a_peer_in_another_pid_namespace_ending_shows_as_end_of_file() {
    with_deadline(LONG, || {
        let (a, b) = pipe(true).unwrap();
        let mut child = fork_in_pid_namespace(false, move || {
            if b.send(&std::process::id()).is_err() {
                return 1;
            }
            // Waits to be killed with its namespace.
            let _ = b.recv::<u8>();
            0
        });
        assert_eq!(a.recv::<u32>().unwrap(), 1, "pid 1 of its namespace");
        child.signal(Signal::KILL);
        assert_eq!(a.recv::<u32>(), Err(GetError::Closed));
        child.wait_deadline(LONG);
    });
}

#[test]
fn a_one_way_pipe_refuses_the_wrong_direction_and_garbage_is_a_typed_error() {
    with_deadline(LONG, || {
        let (reader, writer) = pipe(false).unwrap();
        assert!(matches!(
            reader.send(&1u8),
            Err(PutError::Unsendable { .. })
        ));
        assert!(matches!(
            writer.recv::<u8>(),
            Err(GetError::Unreadable { .. })
        ));
        let mut child = fork_child(move || {
            // Bytes that are not an encoded `Job`, then a good one.
            let ok = writer.send_bytes([0xffu8; 3]).is_ok()
                && writer
                    .send(&Job {
                        id: 9,
                        name: "after".into(),
                        body: vec![],
                    })
                    .is_ok();
            i32::from(!ok)
        });
        assert!(matches!(
            reader.recv::<Job>(),
            Err(GetError::Unreadable { .. })
        ));
        assert_eq!(reader.recv::<Job>().unwrap().name, "after");
        assert_eq!(child.wait_deadline(LONG).exit, Exit::Code(0));
        assert_eq!(reader.recv::<Job>(), Err(GetError::Closed));
    });
}

#[test]
fn select_and_the_futures_see_messages_and_end_of_file() {
    with_deadline(LONG, || {
        let (a, b) = pipe(true).unwrap();
        let (other_a, _other_b) = pipe(true).unwrap();
        let child = fork_child(move || {
            let run = block_on_for(LONG, async {
                let n: u32 = match b.recv_async().await {
                    Ok(n) => n,
                    Err(_) => return 1,
                };
                if b.send_async(&(n + 1)).await.is_err() {
                    return 2;
                }
                // Waits (as a future) to be killed.
                let _ = b.recv_async::<u32>().await;
                0
            });
            run.unwrap_or(3)
        });
        a.send(&41u32).unwrap();
        let ready = mproc_sync::select(&[&other_a.readable(), &a.readable()], Some(LONG));
        assert_eq!(ready, vec![1]);
        assert_eq!(a.recv::<u32>().unwrap(), 42);
        child.signal(Signal::KILL);
        let t = Instant::now();
        let ready = mproc_sync::select(&[&other_a.readable(), &a.readable()], Some(LONG));
        assert_eq!(ready, vec![1], "end-of-file is readable");
        assert!(t.elapsed() < EOF_WITHIN);
        let eof = block_on_for(LONG, a.recv_async::<u32>());
        assert_eq!(eof, Some(Err(GetError::Closed)));
        let mut child = child;
        child.wait_deadline(LONG);
    });
}

#[test]
fn an_end_rebuilt_from_its_descriptors_is_the_same_end() {
    use mproc_queue::{Connection, ConnectionFds};
    let (a, b) = pipe(true).unwrap();
    let owned = |f: Option<std::os::fd::BorrowedFd<'_>>| f.map(|f| f.try_clone_to_owned().unwrap());
    let f = b.fds();
    let copy = ConnectionFds {
        inbox: owned(f.inbox),
        outbox: owned(f.outbox),
        end: f.end.try_clone_to_owned().unwrap(),
    };
    let b2 = Connection::from_fds(copy).unwrap();
    drop(b);
    assert!(a.peer_open(), "the rebuilt copy keeps the end open");
    a.send_bytes(b"there").unwrap();
    assert_eq!(b2.recv_bytes().unwrap(), b"there");
    b2.send_bytes(b"back").unwrap();
    assert_eq!(a.recv_bytes().unwrap(), b"back");
    drop(b2);
    assert_eq!(a.recv_bytes(), Err(mproc_queue::GetError::Closed));
    // Descriptors of the wrong things are refused, not misread.
    let f = a.fds();
    let wrong = ConnectionFds {
        inbox: Some(f.end.try_clone_to_owned().unwrap()),
        outbox: None,
        end: f.end.try_clone_to_owned().unwrap(),
    };
    assert!(Connection::from_fds(wrong).is_err());
    let no_rings = ConnectionFds {
        inbox: None,
        outbox: None,
        end: f.end.try_clone_to_owned().unwrap(),
    };
    assert!(Connection::from_fds(no_rings).is_err());
}
