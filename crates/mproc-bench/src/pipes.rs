//! The operating system's own channels, measured beside mproc's: pipes and Unix sockets,
//! one process writing and another echoing or draining.

use std::hint::black_box;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use crate::figures::{join, per, start};

pub(crate) fn read_exact(fd: RawFd, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: `buf[got..]` is valid for writes of its length; `fd` is open in this process.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        assert!(r > 0, "read failed: {}", std::io::Error::last_os_error());
        got += r as usize;
    }
}

pub(crate) fn write_all(fd: RawFd, buf: &[u8]) {
    let mut put = 0;
    while put < buf.len() {
        // SAFETY: `buf[put..]` is valid for reads of its length; `fd` is open in this process.
        let r = unsafe { libc::write(fd, buf[put..].as_ptr().cast(), buf.len() - put) };
        assert!(r > 0, "write failed: {}", std::io::Error::last_os_error());
        put += r as usize;
    }
}

/// Echoes `rounds` messages of `size` bytes from fd `rx` to fd `tx` (fds inherited by fork).
pub(crate) fn fd_echo(args: (RawFd, RawFd, usize, u64)) {
    let (rx, tx, size, rounds) = args;
    let mut buf = vec![0u8; size];
    for _ in 0..rounds {
        read_exact(rx, &mut buf);
        write_all(tx, &buf);
    }
}

pub(crate) fn fd_sink(args: (RawFd, u64)) -> f64 {
    let mut buf = [0u8; 8];
    read_exact(args.0, &mut buf);
    let t = Instant::now();
    for _ in 1..args.1 {
        read_exact(args.0, &mut buf);
        black_box(buf);
    }
    per(t.elapsed(), args.1 - 1, 1.0)
}

pub(crate) fn pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe().expect("pipe")
}

pub(crate) fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` is valid for two ints; socketpair fills it on success.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", std::io::Error::last_os_error());
    // SAFETY: socketpair returned two fresh fds that nothing else owns.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// Round trip over fds: `there` is (rx, tx) for the echo child, `here` (tx, rx) for us.
pub(crate) fn fd_rtt(here: (RawFd, RawFd), there: (RawFd, RawFd), size: usize, rounds: u64) -> f64 {
    let echo = start(fd_echo, (there.0, there.1, size, rounds + 1));
    let msg = vec![1u8; size];
    let mut back = vec![0u8; size];
    write_all(here.0, &msg);
    read_exact(here.1, &mut back);
    let t = Instant::now();
    for _ in 0..rounds {
        write_all(here.0, &msg);
        read_exact(here.1, &mut back);
    }
    let us = per(t.elapsed(), rounds, 1000.0);
    join(echo);
    us
}

pub(crate) fn pipe_rtt(size: usize, rounds: u64) -> f64 {
    let (a_r, a_w) = pipe();
    let (b_r, b_w) = pipe();
    fd_rtt(
        (a_w.as_raw_fd(), b_r.as_raw_fd()),
        (a_r.as_raw_fd(), b_w.as_raw_fd()),
        size,
        rounds,
    )
}

pub(crate) fn sock_rtt(size: usize, rounds: u64) -> f64 {
    let (mine, theirs) = socketpair();
    fd_rtt(
        (mine.as_raw_fd(), mine.as_raw_fd()),
        (theirs.as_raw_fd(), theirs.as_raw_fd()),
        size,
        rounds,
    )
}

pub(crate) fn pipe_1to1(n: u64) -> f64 {
    let (r, w) = pipe();
    let sink = start(fd_sink, (r.as_raw_fd(), n));
    for i in 0..n {
        write_all(w.as_raw_fd(), &i.to_ne_bytes());
    }
    join(sink)
}
