//! An anonymous (memfd) segment handed to a child through `fork` + `exec`: the child is this
//! same test binary, re-executed with the fd number in `MPROC_TEST_SEGMENT_FD`.
//!
//! The file has its own `main` (harness = false) so that the re-executed binary can act as
//! the helper instead of running tests.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mproc_segment::{Kind, Segment, SegmentOptions};
use mproc_testkit::{Child, Exit};

const ENV: &str = "MPROC_TEST_SEGMENT_FD";

fn helper(fd: i32) -> i32 {
    // SAFETY: the parent passed this fd number across exec for us alone; nothing else in this
    // process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let seg = match SegmentOptions::new(Kind::ARRAY)
        .element::<u64>()
        .from_fd(fd)
    {
        Ok(seg) => seg,
        Err(_) => return 2,
    };
    let cells: &[AtomicU64] = match seg.view_slice(0, 8) {
        Ok(c) => c,
        Err(_) => return 3,
    };
    // Prove we see the parent's data and that the parent sees ours.
    let seed = cells[0].load(Ordering::SeqCst);
    for (i, c) in cells.iter().enumerate().skip(1) {
        c.store(seed * i as u64, Ordering::SeqCst);
    }
    0
}

fn anonymous_segment_crosses_exec() {
    let seg = SegmentOptions::new(Kind::ARRAY)
        .element::<u64>()
        .capacity(8)
        .anonymous()
        .unwrap();
    let cells: &[AtomicU64] = seg.view_slice(0, 8).unwrap();
    cells[0].store(1234, Ordering::SeqCst);
    let fd = seg.inheritable_fd().unwrap();
    let mut child = Child::spawn(
        Command::new(std::env::current_exe().unwrap()).env(ENV, fd.as_raw_fd().to_string()),
    )
    .unwrap();
    drop(fd);
    assert_eq!(
        child.wait_deadline(Duration::from_secs(30)).exit,
        Exit::Code(0)
    );
    for (i, c) in cells.iter().enumerate().skip(1) {
        assert_eq!(c.load(Ordering::SeqCst), 1234 * i as u64);
    }
    // The segment's own fd is close-on-exec: a plain exec'd child cannot see it.
    let flags = rustix::io::fcntl_getfd(&seg).unwrap();
    assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
}

fn named_segment_opened_after_exec() {
    let name = mproc_testkit::unique_name("seg-exec-named");
    let seg = Segment::create(&name, 64).unwrap();
    let mut child = Child::spawn(
        Command::new(std::env::current_exe().unwrap()).env("MPROC_TEST_SEGMENT_NAME", &name),
    )
    .unwrap();
    assert_eq!(
        child.wait_deadline(Duration::from_secs(30)).exit,
        Exit::Code(0)
    );
    let mut buf = [0u8; 4];
    seg.read_bytes(0, &mut buf).unwrap();
    assert_eq!(&buf, b"exec");
}

fn named_helper(name: &str) -> i32 {
    match Segment::open(name).and_then(|s| s.write_bytes(0, b"exec")) {
        Ok(()) => 0,
        Err(_) => 4,
    }
}

fn main() {
    if let Ok(fd) = std::env::var(ENV) {
        std::process::exit(helper(fd.parse().expect("fd number")));
    }
    if let Ok(name) = std::env::var("MPROC_TEST_SEGMENT_NAME") {
        std::process::exit(named_helper(&name));
    }
    let tests: [(&str, fn()); 2] = [
        (
            "anonymous_segment_crosses_exec",
            anonymous_segment_crosses_exec,
        ),
        (
            "named_segment_opened_after_exec",
            named_segment_opened_after_exec,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!("{} passed, {failed} failed", tests.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
}
