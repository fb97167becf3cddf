//! Owners and seals: a name that another user created in advance (squatting) is refused by
//! every `open`, so that user can neither read what this process writes nor truncate it under
//! it; so is one of our own that others may write; anonymous segments cannot be resized.

use std::os::fd::AsFd;

use mproc::prelude::*;
use mproc_testkit::{fork_child, unique_name};

/// The tests of this file fork children that do real work (create segments as another
/// user): they run one at a time, so no other test thread holds a lock at a fork.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the name however the test ends.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = Segment::unlink(&self.0);
    }
}

#[test]
fn names_squatted_by_another_user_are_refused() {
    let _serial = serial();
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot become `nobody` to squat a name; skipped");
        return;
    }
    let queue = unique_name("owners-queue");
    let array = unique_name("owners-array");
    let raw = unique_name("owners-raw");
    let _u = (
        Unlink(queue.clone()),
        Unlink(array.clone()),
        Unlink(raw.clone()),
    );
    // `nobody` creates the names first, readable and writable by everyone, and leaves.
    let (q2, a2, r2) = (queue.clone(), array.clone(), raw.clone());
    fork_child(move || {
        if !mproc_testkit::become_nobody() {
            return 4;
        }
        let mut q = match QueueOptions::new().capacity(8).create::<String>(&q2) {
            Ok(q) => q,
            Err(_) => return 5,
        };
        let _ = &mut q;
        let made = [
            SegmentOptions::new(Kind::ARRAY)
                .element::<f64>()
                .capacity(8)
                .mode(0o666)
                .create(&a2),
            SegmentOptions::new(Kind::RAW)
                .payload_len(64)
                .mode(0o666)
                .create(&r2),
        ];
        for s in made {
            match s {
                Ok(mut s) => s.persist(),
                Err(_) => return 6,
            }
        }
        std::mem::forget(q); // keep the queue's name too
        0
    })
    .assert_success();

    let untrusted = |r: Result<(), SegmentError>| {
        assert!(
            matches!(r, Err(SegmentError::Untrusted { owner: 65534, .. })),
            "{r:?}"
        );
    };
    untrusted(Queue::<String>::open(&queue).map(drop));
    untrusted(Array::<f64>::open(&array).map(drop));
    untrusted(Segment::open(&raw).map(drop));
    untrusted(Segment::open_raw(&raw).map(drop));
    untrusted(Segment::open_or_create(&raw, 64).map(drop));
    // Asked for explicitly, it opens.
    assert!(
        SegmentOptions::any()
            .allow_foreign_owner()
            .open(&raw)
            .is_ok()
    );
}

#[test]
fn our_own_segment_that_others_may_write_is_refused() {
    let _serial = serial();
    let name = unique_name("owners-mode");
    let seg = SegmentOptions::new(Kind::RAW)
        .payload_len(64)
        .mode(0o666)
        .create(&name)
        .unwrap();
    assert!(matches!(
        Segment::open(&name),
        Err(SegmentError::Untrusted { mode: 0o666, .. })
    ));
    // Group-readable is fine; group-writable is not.
    let ro = unique_name("owners-mode-ro");
    let seg2 = SegmentOptions::new(Kind::RAW)
        .payload_len(64)
        .mode(0o640)
        .create(&ro)
        .unwrap();
    assert!(Segment::open(&ro).is_ok());
    drop((seg, seg2));
}

#[test]
fn anonymous_segments_cannot_be_shrunk_or_grown() {
    let _serial = serial();
    let seg = Segment::anonymous(4096).unwrap();
    let fd = seg.as_fd();
    assert_eq!(rustix::fs::ftruncate(fd, 0), Err(mproc::Errno::PERM));
    assert_eq!(rustix::fs::ftruncate(fd, 1 << 20), Err(mproc::Errno::PERM));
    // Still usable.
    seg.write_bytes(0, b"ok").unwrap();
}

#[test]
fn a_planted_fifo_or_symlink_is_not_opened() {
    let _serial = serial();
    let fifo = unique_name("owners-fifo");
    let link = unique_name("owners-link");
    let (pf, pl) = (format!("/dev/shm/{fifo}"), format!("/dev/shm/{link}"));
    rustix::fs::mknodat(
        rustix::fs::CWD,
        pf.as_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        0,
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &pl).unwrap();
    let r1 = Segment::open(&fifo);
    let r2 = Segment::open(&link);
    let _ = std::fs::remove_file(&pf);
    let _ = std::fs::remove_file(&pl);
    assert!(matches!(r1, Err(SegmentError::NotRegular { .. })), "{r1:?}");
    assert!(r2.is_err(), "a symlink is never followed: {r2:?}");
}

#[test]
fn a_zero_filled_file_is_refused_at_once_not_waited_for() {
    let _serial = serial();
    let name = unique_name("owners-zero");
    let path = format!("/dev/shm/{name}");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let _u = Unlink(name.clone());
    // A patient opener: if it waited for a creator, the deadline would stop the test.
    let r = mproc_testkit::with_deadline(std::time::Duration::from_secs(10), || {
        SegmentOptions::any()
            .open_timeout(std::time::Duration::from_secs(60))
            .open(&name)
    });
    assert!(
        matches!(r, Err(SegmentError::NotMproc { found: 0 })),
        "{r:?}"
    );
}
