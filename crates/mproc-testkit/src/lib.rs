//! Test support shared by mproc's crates: forked children that are always reaped and bounded
//! by a deadline, and names that no other test (or test run) uses.
//!
//! Not part of mproc's public API.
#![deny(unsafe_op_in_unsafe_fn)]

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{ForkResult, Pid, fork};

/// The deadline a test child gets unless the test says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Exit code of a child whose closure panicked.
pub const PANIC_EXIT: i32 = 101;

/// Held while forking, so two tests never fork at the same instant (the way nix's own tests
/// serialise their forks).
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// A name unique to this process, this call and this moment: `mproc-test-TAG-PID-N-NANOS`.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("mproc-test-{tag}-{}-{n}-{nanos}", std::process::id())
}

/// How a reaped child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It called `exit` / `_exit` with this code.
    Code(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// The outcome of a reaped child, with its CPU usage.
#[derive(Debug, Clone, Copy)]
pub struct Reaped {
    /// How it ended.
    pub exit: Exit,
    /// User + system CPU time it used.
    pub cpu: Duration,
}

/// A forked child. Dropping it kills (SIGKILL) and reaps it if it has not been reaped, so a
/// failing test never leaves a process behind.
#[derive(Debug)]
pub struct Child {
    pid: Pid,
    pidfd: OwnedFd,
    reaped: bool,
}

/// Forks a child that runs `f` and exits with its return value (or [`PANIC_EXIT`] if it
/// panics). The child never returns into the test harness.
///
/// The child should stay small: no printing, no locks another test thread could hold.
pub fn fork_child(f: impl FnOnce() -> i32) -> Child {
    let guard = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the child only runs `f` and then `_exit`s; it never returns into the harness's
    // threads, which do not exist in the child.
    let result = unsafe { fork() }.expect("fork failed");
    match result {
        ForkResult::Child => {
            let code = match catch_unwind(AssertUnwindSafe(f)) {
                Ok(code) => code,
                Err(_) => PANIC_EXIT,
            };
            // SAFETY: `_exit` ends the process without running the parent's atexit handlers or
            // destructors (which belong to the parent).
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(guard);
            Child::from_pid(child)
        }
    }
}

/// Forks a child that runs `f` as process 1 of a new pid namespace (the kernel's
/// `unshare(CLONE_NEWPID)`, as `unshare --pid --fork` does), with `/proc` of its own mounted
/// in a private mount namespace when `own_proc` (as `--mount-proc`). The returned `Child` is
/// the namespace's parent: it exits with `f`'s code (128 + the signal if `f`'s process was
/// killed), and killing it kills the namespace. Needs root (CI runs as root); a namespace
/// that cannot be made ends the child with code 90.
pub fn fork_in_pid_namespace(own_proc: bool, f: impl FnOnce() -> i32) -> Child {
    use nix::sched::CloneFlags;
    fork_child(move || {
        let mut flags = CloneFlags::CLONE_NEWPID;
        if own_proc {
            flags |= CloneFlags::CLONE_NEWNS;
        }
        if nix::sched::unshare(flags).is_err() {
            return 90;
        }
        // SAFETY: this process has one thread (a forked child); the grandchild runs `f` and
        // `_exit`s without returning.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // SAFETY: prctl with integer arguments only.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                if own_proc && !mount_own_proc() {
                    // SAFETY: ends the process without running the parent's handlers.
                    unsafe { libc::_exit(91) };
                }
                let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(PANIC_EXIT);
                // SAFETY: as above.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
                _ => 92,
            },
            Err(_) => 93,
        }
    })
}

/// Makes this process's mounts private and mounts a `/proc` that shows its own pid namespace.
fn mount_own_proc() -> bool {
    use nix::mount::{MsFlags, mount};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .is_ok()
        && mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .is_ok()
}

impl Child {
    /// Adopts an already started child process (for example from `std::process::Command`,
    /// whose `Child::id` gives the pid). It must be a child of this process.
    pub fn from_pid(pid: Pid) -> Child {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        assert!(
            fd >= 0,
            "pidfd_open failed: {}",
            std::io::Error::last_os_error()
        );
        Child {
            pid,
            // SAFETY: pidfd_open returned a fresh fd that nothing else owns.
            pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
            reaped: false,
        }
    }

    /// Spawns `cmd` and adopts the process, so it is reaped (and killed on drop) like a
    /// forked one.
    // The std handle is dropped unreaped on purpose: the returned `Child` reaps it by pid.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<Child> {
        let child = cmd.spawn()?;
        Ok(Child::from_pid(Pid::from_raw(child.id() as i32)))
    }

    /// The child's pid.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        if !self.reaped {
            let _ = kill(self.pid, sig);
        }
    }

    /// Waits up to `timeout` for the child to exit; reaps it and returns its outcome, or
    /// `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Reaped> {
        assert!(!self.reaped, "child already reaped");
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                .unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, ms) {
                Ok(n) if n > 0 => return Some(self.reap()),
                Ok(_) if Instant::now() >= end => return None,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => panic!("poll on pidfd failed: {e}"),
            }
        }
    }

    /// Waits for the child; if it has not exited after `deadline`, kills it and panics (the
    /// test fails instead of hanging).
    pub fn wait_deadline(&mut self, deadline: Duration) -> Reaped {
        match self.wait_timeout(deadline) {
            Some(r) => r,
            None => {
                self.signal(Signal::SIGKILL);
                let _ = self.reap();
                panic!(
                    "child {} still running after {deadline:?}; killed",
                    self.pid
                );
            }
        }
    }

    /// [`wait_deadline`](Child::wait_deadline) with [`DEFAULT_DEADLINE`].
    pub fn wait(&mut self) -> Reaped {
        self.wait_deadline(DEFAULT_DEADLINE)
    }

    /// Waits (bounded) and asserts the child exited with code 0.
    pub fn assert_success(mut self) {
        let r = self.wait();
        assert_eq!(r.exit, Exit::Code(0), "child {} failed", self.pid);
    }

    fn reap(&mut self) -> Reaped {
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `status` and `usage` are valid for writes; the pid is our own child, so
            // this never reaps another test's process.
            let r = unsafe { libc::wait4(self.pid.as_raw(), &mut status, 0, &mut usage) };
            if r == self.pid.as_raw() {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                panic!("wait4({}) failed: {err}", self.pid);
            }
        }
        self.reaped = true;
        let exit = if libc::WIFSIGNALED(status) {
            Exit::Signaled(libc::WTERMSIG(status))
        } else {
            Exit::Code(libc::WEXITSTATUS(status))
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Reaped {
            exit,
            cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// xorshift64*: a tiny deterministic generator for fault-injection schedules, so a failing
/// round can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number (the seed must not be 0).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Lists the entries of `/dev/shm` whose name contains `needle`.
pub fn shm_entries(needle: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `f` on a watchdog thread's clock: if it has not returned after `deadline`, the whole
/// test process aborts with a message, so a deadlocked test cannot stall CI.
pub fn with_deadline<R>(deadline: Duration, f: impl FnOnce() -> R) -> R {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(deadline) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
            eprintln!("test exceeded its deadline of {deadline:?}; aborting");
            std::process::abort();
        }
    });
    let r = f();
    let _ = tx.send(());
    let _ = watchdog.join();
    r
}

/// How a fault-injection round's SIGKILL went (see [`reap_round`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundKill {
    /// The victim died of the SIGKILL (it may have finished before it landed).
    pub landed: bool,
    /// It did, and it was a consumer (which may take one item with it).
    pub consumer_died: bool,
}

/// Reaps a fault-injection round in which `procs[..producers]` are producers and the rest
/// consumers, and `procs[victim]` was sent SIGKILL: waits for the producers, runs `between`
/// (which closes the queue, so the consumers drain and stop), then waits for the consumers,
/// each before `deadline`. Every process but the victim must have exited 0.
pub fn reap_round(
    procs: &mut [Child],
    producers: usize,
    victim: usize,
    deadline: Duration,
    round: u64,
    between: impl FnOnce(),
) -> RoundKill {
    let mut kill = RoundKill {
        landed: false,
        consumer_died: false,
    };
    let mut reap = |i: usize, child: &mut Child| {
        let r = child.wait_deadline(deadline);
        if i == victim {
            kill.landed = r.exit == Exit::Signaled(Signal::SIGKILL as i32);
            kill.consumer_died = kill.landed && i >= producers;
        } else {
            assert_eq!(r.exit, Exit::Code(0), "round {round}: process {i} failed");
        }
    };
    for (i, child) in procs.iter_mut().enumerate().take(producers) {
        reap(i, child);
    }
    between();
    for (i, child) in procs.iter_mut().enumerate().skip(producers) {
        reap(i, child);
    }
    kill
}

/// Waits until `alive()` turns false, for at most `limit`; whether it did.
pub fn gone_within(limit: Duration, mut alive: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if !alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    !alive()
}

/// Wakes the thread that polls a future (a minimal executor for tests).
struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `f` once with a waker that unparks this thread: `Some(output)` if it completed.
/// Tests use it to get a future registered (Pending) before a peer acts.
pub fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    match std::pin::Pin::new(f).poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

/// Runs `f` to completion on this thread, sleeping between wake-ups (no runtime needed), or
/// gives up after `limit` (`None`).
pub fn block_on_for<F: std::future::Future>(limit: Duration, f: F) -> Option<F::Output> {
    let deadline = std::time::Instant::now() + limit;
    let mut f = std::pin::pin!(f);
    let waker = std::task::Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::park_timeout(left);
    }
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// The CPU a waiter uses while idle: forks a child that runs `wait(ready)`, where `wait` sets
/// up its wait (a pending future, say), calls `ready()` once it is waiting, then finishes the
/// wait and returns whether it ended as expected. The parent lets one second pass (the
/// measured interval, not a synchronisation), calls `release` to end the wait, and returns
/// the CPU the child (all its threads) used between `ready()` and the end of the wait, or
/// `None` if the child reported a failure.
pub fn idle_cpu(wait: impl FnOnce(&dyn Fn()) -> bool, release: impl FnOnce()) -> Option<Duration> {
    let (r, w) = nix::unistd::pipe().expect("pipe");
    let mut child = fork_child(|| {
        let start = std::cell::Cell::new(None);
        let ready = || {
            start.set(Some(cpu_time()));
            nix::unistd::write(&w, b"x").expect("write");
        };
        let ok = wait(&ready);
        match (ok, start.get()) {
            // In 0.1 ms units, capped below the failure code.
            (true, Some(t)) => (cpu_time().saturating_sub(t).as_micros() / 100).min(250) as i32,
            _ => 255,
        }
    });
    // Our copy of the write end closed: a child that fails before `ready()` gives EOF.
    drop(w);
    let mut b = [0u8];
    if nix::unistd::read(&r, &mut b).expect("read") == 1 {
        std::thread::sleep(Duration::from_secs(1));
    }
    release();
    match child.wait().exit {
        Exit::Code(tenths) if tenths < 255 => Some(Duration::from_micros(tenths as u64 * 100)),
        _ => None,
    }
}

/// A signal nix's `Signal` enum does not name (a realtime one, `SIGRTMIN + 2`), whose default
/// action ends the process: for tests that a child's end is reported whatever killed it.
pub fn realtime_signal() -> i32 {
    libc::SIGRTMIN() + 2
}

/// A task (`fn(u32) -> u32`, for `Process` and `Pool`) that kills its process with
/// [`realtime_signal`].
pub fn die_by_realtime_signal(_: u32) -> u32 {
    // SAFETY: raise(2) with a realtime signal whose default action ends the process.
    unsafe { libc::raise(realtime_signal()) };
    unreachable!("the default action of a realtime signal is to terminate")
}
