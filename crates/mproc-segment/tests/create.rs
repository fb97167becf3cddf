//! Creating named segments across real processes: a name appears only once its segment is
//! initialised, racing creators (one creates, the others open), a creator that dies before
//! it is ready, and a full `/dev/shm`. Each test uses its own names and bounds its children.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mproc_segment::{HEADER_LEN, Kind, Segment, SegmentError, SegmentOptions};
use mproc_testkit::{Exit, fork_child, shm_entries, unique_name};

mod common;
use common::*;

#[test]
fn a_segment_gets_its_name_only_once_initialised() {
    let name = unique_name("seg-race");
    let (go_r, go_w) = rustix::pipe::pipe().unwrap();
    let (ready_r, ready_w) = rustix::pipe::pipe().unwrap();
    let n = name.clone();
    let mut child = fork_child(move || {
        let r = SegmentOptions::new(Kind::ARRAY)
            .element::<u32>()
            .capacity(16)
            .create_with(&n, |seg| {
                let cell: &AtomicU32 = seg.view(0)?;
                cell.store(0xC0FFEE, Ordering::Relaxed);
                // Tell the parent we are inside init, then wait for its go.
                rustix::io::write(&ready_w, b"i").unwrap();
                let mut b = [0u8];
                rustix::io::read(&go_r, &mut b).unwrap();
                Ok::<(), SegmentError>(())
            });
        let Ok(mut seg) = r else { return 7 };
        // Hand the name to the parent, which unlinks it.
        seg.persist();
        rustix::io::write(&ready_w, b"d").unwrap();
        0
    });
    let mut b = [0u8];
    rustix::io::read(&ready_r, &mut b).unwrap();
    let _cleanup = Cleanup(name.clone());

    // While the creator is inside init, the name does not exist yet: nobody can see (or
    // wait on) a half-made segment.
    assert!(matches!(
        SegmentOptions::any().open(&name),
        Err(SegmentError::NotFound { .. })
    ));
    assert!(shm_entries(&name).is_empty());
    rustix::io::write(&go_w, b"g").unwrap();
    rustix::io::read(&ready_r, &mut b).unwrap();
    // Once it has a name, it is complete.
    let seg = SegmentOptions::new(Kind::ARRAY)
        .element::<u32>()
        .open(&name)
        .unwrap();
    assert_eq!(
        seg.view::<AtomicU32>(0).unwrap().load(Ordering::Relaxed),
        0xC0FFEE
    );
    assert_eq!(child.wait().exit, Exit::Code(0));
}

#[test]
fn racing_creators_one_creates_the_others_open() {
    let name = unique_name("seg-race-create");
    let _cleanup = Cleanup(name.clone());
    // Every child stays until all have tried: a creator that had left would leave a stale
    // name, which the next `open_or_create` would (rightly) reclaim and create again.
    let done_mem = Segment::anonymous(8).unwrap();
    let done: &AtomicU32 = done_mem.view(0).unwrap();
    let created: Vec<_> = (0..4)
        .map(|_| {
            let n = name.clone();
            fork_child(move || {
                let r = SegmentOptions::new(Kind::RAW)
                    .payload_len(64)
                    .open_or_create_with(&n, |seg| {
                        seg.view::<AtomicU32>(0)?.store(7, Ordering::Relaxed);
                        Ok::<(), SegmentError>(())
                    });
                let code = match &r {
                    // Exit 10 + whether this one created it; the value is always initialised.
                    Ok((seg, created))
                        if seg
                            .view::<AtomicU32>(0)
                            .is_ok_and(|c| c.load(Ordering::Relaxed) == 7) =>
                    {
                        10 + i32::from(*created)
                    }
                    _ => 1,
                };
                done.fetch_add(1, Ordering::SeqCst);
                let end = Instant::now() + Duration::from_secs(30);
                while done.load(Ordering::SeqCst) < 4 && Instant::now() < end {
                    std::thread::yield_now();
                }
                if let Ok((mut seg, _)) = r {
                    seg.persist(); // the parent's Cleanup unlinks the name
                }
                code
            })
        })
        .collect();
    let codes: Vec<_> = created
        .into_iter()
        .map(|mut c| match c.wait().exit {
            Exit::Code(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(codes.iter().all(|&c| c == 10 || c == 11), "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 11).count(), 1, "{codes:?}");
}

#[test]
fn a_creator_that_died_before_ready_makes_open_fail_not_hang() {
    // A child writes the start of a header (magic, Initializing, its pid) and exits, as a
    // creator SIGKILLed inside `create` would leave it.
    let name = unique_name("seg-dead-creator");
    let _c = Cleanup(name.clone());
    let n = name.clone();
    let mut child = fork_child(move || {
        let _fd = foreign(&n, &header_bytes(1, std::process::id()));
        0
    });
    assert_eq!(child.wait().exit, Exit::Code(0));
    let start = Instant::now();
    let err = SegmentOptions::any()
        .open_timeout(Duration::from_secs(30))
        .open(&name)
        .unwrap_err();
    assert_eq!(err, SegmentError::NotReady { creator_dead: true });
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "a dead creator is noticed before the timeout"
    );

    // A live creator that never finishes: NotReady after the timeout.
    let stuck = unique_name("seg-stuck-creator");
    let _c2 = Cleanup(stuck.clone());
    let _fd = foreign(&stuck, &header_bytes(1, std::process::id()));
    // A creator holds its segment's in-use lock (byte 0) from before it writes the header.
    let mut fl: libc::flock = in_use_flock();
    fl.l_type = libc::F_RDLCK as libc::c_short;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&_fd);
    // SAFETY: F_OFD_SETLK reads the `flock` we pass, which lives across the call.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) }, 0);
    let err = SegmentOptions::any()
        .open_timeout(Duration::from_millis(30))
        .open(&stuck)
        .unwrap_err();
    assert_eq!(
        err,
        SegmentError::NotReady {
            creator_dead: false
        }
    );
}

#[test]
fn a_full_dev_shm_is_out_of_space_at_create() {
    let st = rustix::fs::statvfs("/dev/shm").unwrap();
    let fs_size = st.f_blocks * st.f_frsize;
    let name = unique_name("seg-huge");
    let err = Segment::create(&name, (fs_size * 2) as usize).unwrap_err();
    assert_eq!(
        err,
        SegmentError::OutOfSpace {
            requested: fs_size * 2 + HEADER_LEN as u64
        }
    );
    assert!(shm_entries(&name).is_empty(), "a failed create unlinks");
}
