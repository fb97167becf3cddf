//! Process identity as this pid namespace sees it: a pid plus the process's start time, for
//! display (`mproc ls`), start-up bookkeeping and tests. Whether a *peer* of a shared object
//! is alive is never decided from this: see [`liveness`](crate::liveness).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::io::Errno;
use rustix::process::{Pid, test_kill_process};

/// A process, identified by its pid and its start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`), so that a recycled pid is not mistaken for the original process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessId {
    /// The process id.
    pub pid: u32,
    /// Start time in clock ticks since boot; 0 when it could not be read.
    pub start_time: u64,
}

/// The current process's identity, cached: `CACHED_PID` is written (Release) after
/// `CACHED_START`, and is compared with `getpid()` so a forked child recomputes its own.
static CACHED_PID: AtomicU64 = AtomicU64::new(0);
static CACHED_START: AtomicU64 = AtomicU64::new(0);

static PID: AtomicU32 = AtomicU32::new(0);
static ATFORK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn forget_pid_in_child() {
    PID.store(0, Ordering::Relaxed);
    // A forked child has one thread: the one that forked.
    OWN_THREADS.store(0, Ordering::Relaxed);
}

/// Threads mproc itself runs in this process (a pool's handler, the async reactors), which
/// the threaded-fork check does not count as the user's (see [`OwnThread`]).
static OWN_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Marks one of mproc's own threads for as long as it lives: make it before spawning the
/// thread and move it into the thread's closure (if the spawn fails, the closure and the
/// mark are dropped with it). The check before `fork` counts a process's threads minus
/// these: they run only mproc's code, never hold a lock a forked child would take (the
/// child runs only its task; every per-process instance is re-made in it), so forking beside
/// them is not the hazard the check warns of.
#[derive(Debug)]
pub struct OwnThread(());

impl OwnThread {
    /// Counts one more of mproc's own threads until the mark is dropped.
    pub fn mark() -> OwnThread {
        register_atfork();
        OWN_THREADS.fetch_add(1, Ordering::Relaxed);
        OwnThread(())
    }

    /// How many of mproc's own threads this process runs.
    pub fn count() -> usize {
        OWN_THREADS.load(Ordering::Relaxed)
    }
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        let _ = OWN_THREADS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
    }
}

/// Registers the fork handler once. Not a `Once`: a thread forking while another is inside
/// `call_once` would leave the child's `Once` "running" forever, and every later call in the
/// child would block. A flag nobody waits on cannot do that.
fn register_atfork() {
    if ATFORK
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        // SAFETY: registers a handler that only stores to an atomic, which is
        // async-signal-safe and valid in the child. (Raw libc: rustix has no
        // `pthread_atfork`; it is libc's, not the kernel's.)
        unsafe { libc::pthread_atfork(None, None, Some(forget_pid_in_child)) };
    }
}

/// The calling process's pid without a system call after the first use: cached, and
/// forgotten in a forked child by a `pthread_atfork` handler. Hot paths (queue slot claims)
/// use this; `std::process::id()` is a system call every time.
pub fn current_pid() -> u32 {
    let pid = PID.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    register_atfork();
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

impl ProcessId {
    /// The calling process. Cheap after the first call in a process.
    pub fn current() -> ProcessId {
        let pid = current_pid();
        if CACHED_PID.load(Ordering::Acquire) == u64::from(pid) {
            return ProcessId {
                pid,
                start_time: CACHED_START.load(Ordering::Relaxed),
            };
        }
        let id = ProcStat::of("self").map_or(ProcessId { pid, start_time: 0 }, |s| ProcessId {
            pid,
            start_time: s.start_time,
        });
        CACHED_START.store(id.start_time, Ordering::Relaxed);
        CACHED_PID.store(u64::from(pid), Ordering::Release);
        id
    }

    /// The process with this pid now, if it exists.
    pub fn of(pid: u32) -> Option<ProcessId> {
        let start_time = read_start_time(pid)?;
        Some(ProcessId { pid, start_time })
    }

    /// Whether this very process (same pid and start time) is still running, as seen from
    /// this pid namespace: for a child this process started (tests, the pool's bookkeeping).
    /// A zombie (exited but not yet reaped) counts as dead.
    pub fn is_alive(&self) -> bool {
        task_alive(self.pid, |start| {
            self.start_time == 0 || start == self.start_time
        })
    }
}

/// Whether task (process or thread) `id` exists, is not a zombie, and its start time passes
/// `same_start` (so a recycled id is not taken for the original): a signal probe, then a read
/// of `/proc/ID/stat`. Without procfs the probe is all there is.
fn task_alive(id: u32, same_start: impl FnOnce(u64) -> bool) -> bool {
    if id == 0 || id > i32::MAX as u32 {
        return false;
    }
    let Some(pid) = Pid::from_raw(id as i32) else {
        return false;
    };
    match test_kill_process(pid) {
        Ok(()) | Err(Errno::PERM) => {}
        Err(_) => return false,
    }
    match ProcStat::read(&id.to_string()) {
        Ok(Some(s)) => s.state != 'Z' && s.state != 'X' && same_start(s.start_time),
        Ok(None) => true,
        // Exited between the probe and the read.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}

fn read_start_time(pid: u32) -> Option<u64> {
    ProcStat::of(&pid.to_string()).map(|s| s.start_time)
}

/// The fields mproc reads from `/proc/PID/stat` (the one parser of that file: liveness and
/// start times here, thread counts in the pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 20: threads in the process.
    pub num_threads: u64,
    /// Field 22: start time in clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Reads `/proc/WHO/stat` (`WHO` a pid, or `self`); `None` if it cannot be read or
    /// parsed.
    pub fn of(who: &str) -> Option<ProcStat> {
        ProcStat::read(who).ok().flatten()
    }

    /// Reads `/proc/WHO/stat`: the read's error (`NotFound`: no such process), or the fields,
    /// `None` if the text does not parse.
    pub fn read(who: &str) -> std::io::Result<Option<ProcStat>> {
        Ok(ProcStat::parse(&std::fs::read_to_string(format!(
            "/proc/{who}/stat"
        ))?))
    }

    /// Parses the text of a `stat` file. The command name (field 2) may contain spaces and
    /// parentheses, so fields are counted after the last `)`.
    pub fn parse(stat: &str) -> Option<ProcStat> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        // Field 3 is the state; num_threads is field 20 (16 further on), starttime field 22.
        let num_threads = fields.nth(16)?.parse().ok()?;
        let start_time = fields.nth(1)?.parse().ok()?;
        Some(ProcStat {
            state,
            num_threads,
            start_time,
        })
    }
}

/// Milliseconds on the monotonic clock (`CLOCK_MONOTONIC`), for coarse "not before" marks
/// kept in atomics. Not an `Instant` base in a `OnceLock`: a forked child would block for ever
/// on a `OnceLock` another thread of its parent was initialising at the fork.
pub fn monotonic_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1000)
        .saturating_add(t.tv_nsec as u64 / 1_000_000)
}

/// This process's resident memory in bytes (`/proc/self/statm` × the page size), if known.
///
/// ```
/// let rss = mproc_segment::resident_bytes().expect("procfs");
/// assert!(rss > 0);
/// ```
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_pid_is_renewed_in_a_forked_child() {
        assert_eq!(current_pid(), std::process::id());
        mproc_testkit::fork_child(|| {
            let ok = current_pid() == std::process::id()
                && ProcessId::current().pid == std::process::id();
            if ok { 0 } else { 1 }
        })
        .assert_success();
    }

    #[test]
    fn current_is_alive_and_stable() {
        let me = ProcessId::current();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert_eq!(ProcessId::current(), me);
        assert!(me.is_alive());
        let impostor = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !impostor.is_alive(),
            "a different start time is a different process"
        );
    }

    #[test]
    fn parse_stat_handles_odd_names() {
        let s = "42 (a) b) (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19 20";
        let want = ProcStat {
            state: 'S',
            num_threads: 17,
            start_time: 777,
        };
        assert_eq!(ProcStat::parse(s), Some(want));
    }

    #[test]
    fn proc_stat_of_self_agrees_with_the_process_id() {
        let s = ProcStat::of("self").unwrap();
        // (The state is the main thread's, which in the test harness sleeps: not checked.)
        assert!(s.num_threads >= 1 && s.state != 'Z');
        assert_eq!(s.start_time, ProcessId::current().start_time);
    }
}
