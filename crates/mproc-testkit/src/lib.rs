//! Test support shared by mproc's crates: forked children that are always reaped and bounded
//! by a deadline, and names that no other test (or test run) uses.
//!
//! Not part of mproc's public API.
#![deny(unsafe_op_in_unsafe_fn)]

use std::os::fd::OwnedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
pub use rustix::process::Signal;

mod redis;
pub use redis::RedisServer;
use rustix::process::{Pid, kill_process};

/// Which side of [`fork`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The new process.
    Child,
    /// The caller; the child's pid.
    Parent(i32),
}

/// `fork(2)` (libc's: rustix has only `kernel_fork`, which skips libc's fork handlers), for
/// the tests that manage a process by hand; most use [`fork_child`].
///
/// # Safety
/// The child must only use what the forking thread owns and end with [`exit_now`].
pub unsafe fn fork() -> Result<Forked, Errno> {
    // SAFETY: the caller's contract.
    match unsafe { libc::fork() } {
        0 => Ok(Forked::Child),
        pid if pid > 0 => Ok(Forked::Parent(pid)),
        _ => Err(Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)),
    }
}

/// Whether process `pid` exists (a zombie included): the signal-0 probe.
pub fn exists(pid: i32) -> bool {
    Pid::from_raw(pid).is_some_and(|p| {
        matches!(
            rustix::process::test_kill_process(p),
            Ok(()) | Err(Errno::PERM)
        )
    })
}

/// Sends `sig` to process `pid` (errors ignored: the process may be gone).
pub fn kill(pid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pid) {
        let _ = kill_process(p, sig);
    }
}

/// Waits for (and reaps) child `pid`: how it ended, `None` if it is not our child.
pub fn waitpid(pid: i32) -> Option<Exit> {
    let (_, st) =
        rustix::process::waitpid(Pid::from_raw(pid), rustix::process::WaitOptions::empty())
            .ok()??;
    match (st.exit_status(), st.terminating_signal()) {
        (Some(code), _) => Some(Exit::Code(code)),
        (None, Some(sig)) => Some(Exit::Signaled(sig)),
        _ => None,
    }
}

/// Makes this (forked, single-threaded) process the unprivileged user `nobody` (65534),
/// group first: whether it worked (only root can).
pub fn become_nobody() -> bool {
    // SAFETY: setgid/setuid take integers; in a single-threaded child they change the whole
    // process's credentials (glibc's wrappers also broadcast to any other thread).
    unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 }
}

/// Sets a resource limit of this process (soft and hard): whether it worked.
pub fn set_limit(resource: rustix::process::Resource, limit: u64) -> bool {
    rustix::process::setrlimit(
        resource,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .is_ok()
}

/// Ends a forked child without the parent's atexit handlers or destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; always safe to call.
    unsafe { libc::_exit(code) }
}

/// The deadline a test child gets unless the test says otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Exit code of a child whose closure panicked.
pub const PANIC_EXIT: i32 = 101;

/// Held while forking, so two tests never fork at the same instant.
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
    pid: i32,
    pidfd: OwnedFd,
    reaped: bool,
}

/// Forks a child that runs `f` and exits with its return value (or [`PANIC_EXIT`] if it
/// panics). The child never returns into the test harness.
///
/// The child should stay small: no printing, no locks another test thread could hold. It is
/// SIGKILLed when the thread that forked it ends (`PR_SET_PDEATHSIG`), so a test aborted by
/// its deadline leaves no child behind: wait for a child on the thread that forked it.
pub fn fork_child(f: impl FnOnce() -> i32) -> Child {
    let guard = FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let parent = rustix::process::getpid();
    // SAFETY: the child only runs `f` and then `_exit`s; it never returns into the harness's
    // threads, which do not exist in the child.
    let result = unsafe { fork() }.expect("fork failed");
    match result {
        Forked::Child => {
            // This process's copy of the lock is held by its only thread: let it go, so that
            // `f` may fork children of its own.
            drop(guard);
            // A test that fails by its deadline aborts: its children die with it rather than
            // live on as orphans (a child parked forever would never exit). The kernel sends
            // the signal when the forking thread ends; tests wait for their children on the
            // thread that forked them.
            let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
            if rustix::process::getppid() != Some(parent) {
                exit_now(PANIC_EXIT);
            }
            let code = match catch_unwind(AssertUnwindSafe(f)) {
                Ok(code) => code,
                Err(_) => PANIC_EXIT,
            };
            exit_now(code)
        }
        Forked::Parent(child) => {
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
    use rustix::thread::UnshareFlags;
    fork_child(move || {
        let mut flags = UnshareFlags::NEWPID;
        if own_proc {
            flags |= UnshareFlags::NEWNS;
        }
        // SAFETY: no `FILES` flag (the one that splits descriptor tables between threads);
        // this forked child has one thread anyway.
        if unsafe { rustix::thread::unshare_unsafe(flags) }.is_err() {
            return 90;
        }
        // SAFETY: this process has one thread (a forked child); the grandchild runs `f` and
        // `_exit`s without returning.
        match unsafe { fork() } {
            Ok(Forked::Child) => {
                let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
                if own_proc && !mount_own_proc() {
                    exit_now(91);
                }
                let code = catch_unwind(AssertUnwindSafe(f)).unwrap_or(PANIC_EXIT);
                exit_now(code)
            }
            Ok(Forked::Parent(child)) => match waitpid(child) {
                Some(Exit::Code(code)) => code,
                Some(Exit::Signaled(sig)) => 128 + sig,
                None => 92,
            },
            Err(_) => 93,
        }
    })
}

/// Makes this process's mounts private and mounts a `/proc` that shows its own pid namespace.
/// Forks a child that runs `f` in a mount namespace of its own with an empty tmpfs on
/// `/dev/shm`: it shares no shared memory with this process (nor this process's liveness
/// roll). Needs root (CI runs as root); a namespace that cannot be made ends the child with
/// code 94.
pub fn fork_with_own_shm(f: impl FnOnce() -> i32) -> Child {
    fork_with_shm_limit(None, f)
}

/// As [`fork_with_own_shm`], with a `/dev/shm` of at most `limit` bytes (`None`: tmpfs's
/// default, half of memory), as a container's (Docker gives 64 MiB): for tests of what a
/// full `/dev/shm` does.
pub fn fork_with_shm_limit(limit: Option<u64>, f: impl FnOnce() -> i32) -> Child {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
    use rustix::thread::UnshareFlags;
    // Made before the fork: the child allocates nothing before it runs `f`.
    let data = limit.map(|l| std::ffi::CString::new(format!("size={l}")).expect("no NUL"));
    fork_child(move || {
        // SAFETY: no `FILES` flag; this forked child has one thread.
        let own = unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }.is_ok()
            && mount_change(
                "/",
                MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
            )
            .is_ok()
            && mount(
                "tmpfs",
                "/dev/shm",
                "tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV,
                data.as_deref(),
            )
            .is_ok();
        if !own {
            return 94;
        }
        f()
    })
}

fn mount_own_proc() -> bool {
    use rustix::mount::{MountFlags, MountPropagationFlags, mount, mount_change};
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .is_ok()
        && mount(
            "proc",
            "/proc",
            "proc",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            None,
        )
        .is_ok()
}

impl Child {
    /// Adopts an already started child process (for example from `std::process::Command`,
    /// whose `Child::id` gives the pid). It must be a child of this process.
    pub fn from_pid(pid: i32) -> Child {
        let pidfd = Pid::from_raw(pid)
            .ok_or(Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
            .unwrap_or_else(|e| panic!("pidfd_open({pid}) failed: {e}"));
        Child {
            pid,
            pidfd,
            reaped: false,
        }
    }

    /// Spawns `cmd` and adopts the process, so it is reaped (and killed on drop) like a
    /// forked one.
    // The std handle is dropped unreaped on purpose: the returned `Child` reaps it by pid.
    #[allow(clippy::zombie_processes)]
    pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<Child> {
        let child = cmd.spawn()?;
        Ok(Child::from_pid(child.id() as i32))
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        if !self.reaped {
            kill(self.pid, sig);
        }
    }

    /// Waits up to `timeout` for the child to exit; reaps it and returns its outcome, or
    /// `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Reaped> {
        assert!(!self.reaped, "child already reaped");
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let timeout = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timeout)) {
                Ok(n) if n > 0 => return Some(self.reap()),
                Ok(_) if Instant::now() >= end => return None,
                Ok(_) | Err(Errno::INTR) => continue,
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
                self.signal(Signal::KILL);
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
            let r = unsafe { libc::wait4(self.pid, &mut status, 0, &mut usage) };
            if r == self.pid {
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
            self.signal(Signal::KILL);
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
            kill.landed = r.exit == Exit::Signaled(Signal::KILL.as_raw());
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
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite. (libc: rustix
    // has no getrusage.)
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we pass, which lives across the call.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(r, 0, "getrusage");
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The CPU a waiter uses while idle: forks a child that runs `wait(ready)`, where `wait` sets
/// up its wait (a pending future, say), calls `ready()` once it is waiting, then finishes the
/// wait and returns whether it ended as expected. The parent lets one second pass (the
/// measured interval, not a synchronisation), calls `release` to end the wait, and returns
/// the CPU the child (all its threads) used between `ready()` and the end of the wait, or
/// `None` if the child reported a failure.
pub fn idle_cpu(wait: impl FnOnce(&dyn Fn()) -> bool, release: impl FnOnce()) -> Option<Duration> {
    let (r, w) = rustix::pipe::pipe().expect("pipe");
    let mut child = fork_child(|| {
        let start = std::cell::Cell::new(None);
        let ready = || {
            start.set(Some(cpu_time()));
            rustix::io::write(&w, b"x").expect("write");
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
    if rustix::io::read(&r, &mut b).expect("read") == 1 {
        std::thread::sleep(Duration::from_secs(1));
    }
    release();
    match child.wait().exit {
        Exit::Code(tenths) if tenths < 255 => Some(Duration::from_micros(tenths as u64 * 100)),
        _ => None,
    }
}

/// A realtime signal (`SIGRTMIN + 2`, which no signal enum names), whose default
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
