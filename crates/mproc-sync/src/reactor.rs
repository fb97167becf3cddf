//! How a future learns that a futex word (or a file descriptor) changed: one reactor thread
//! per process for futex words, one for file descriptors, each started on first use.
//!
//! **Futex words.** A future that must wait registers `(word, the value it saw, its Waker)`
//! and returns `Pending`. The word reactor sleeps in `futex_waitv` (Linux ≥ 5.16) on every
//! registered word at once, plus a process-private *doorbell* word that a registration rings
//! so the reactor re-reads the list. A peer's ordinary `FUTEX_WAKE` (the same one that wakes a
//! blocked thread: wakers do not know or care that the sleeper is a reactor) or a value that
//! no longer matches ends the sleep; the reactor wakes every future registered on that word
//! and forgets them (registrations are one-shot: a future that is still not ready registers
//! again). Every registration also carries a *nap*: when it passes, the future is woken
//! anyway and re-polls, which is how a wait learns that a peer died without waking it (the
//! same re-poll interval as the blocking call).
//!
//! The fast path stays free of system calls: a future registers only after its operation
//! failed, and counts itself in the primitive's waiter count (`Parking`, the lock's WAITERS
//! bit) exactly as a blocked thread does, so a waker that sees nobody waiting makes no system
//! call at all. An idle process with pending futures costs one reactor wake-up per nap.
//!
//! **Memory safety.** The reactor never reads a registered word itself: only the kernel does
//! (`futex_waitv`, and a zero-timeout `FUTEX_WAIT` to find which word changed), and the kernel
//! answers `EFAULT` for an address that is no longer mapped. So a registration that outlives
//! its segment (a future leaked with `mem::forget`) costs at most a spurious wake-up, never a
//! read of unmapped memory. A dropped future removes its registration.
//!
//! **File descriptors** (pidfds for process exit, a user's fd in a select) are watched by a
//! second thread in `poll(2)`, with an eventfd as its doorbell; the same one-shot and nap
//! rules apply, and a closed fd (`POLLNVAL`) fires its registration.
//!
//! On a kernel without `futex_waitv` (`ENOSYS`, before 5.16) the word reactor degrades to
//! waking every registration each millisecond: correct, but no longer idle.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant};

/// The most futex words one `futex_waitv` call takes (the kernel's `FUTEX_WAITV_MAX`); one
/// of them is the doorbell. Beyond that, the words left out are re-polled every millisecond.
const WAITV_MAX: usize = 128;

/// How long the word reactor naps when it could not include every word in its call, or when
/// the kernel lacks `futex_waitv`.
const OVERFLOW_NAP: Duration = crate::naps::REACTOR_OVERFLOW;

/// One registration: who to wake, and when to wake it anyway.
struct Entry<K> {
    key: K,
    waker: Waker,
    until: Instant,
    nap: Duration,
}

/// Naps that end this close together are served by one wake-up of the reactor.
const NAP_SLACK: Duration = crate::naps::REACTOR_SLACK;

/// A reactor's table of registrations (one-shot: firing removes them).
struct Table<K> {
    entries: HashMap<u64, Entry<K>>,
    next_id: u64,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table {
            entries: HashMap::new(),
            next_id: 1,
        }
    }
}

impl<K: Copy + PartialEq> Table<K> {
    fn insert(&mut self, key: K, waker: &Waker, nap: Duration) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                key,
                waker: waker.clone(),
                until: Instant::now() + nap,
                nap,
            },
        );
        id
    }

    /// Removes the entries whose nap has passed (or ends within [`NAP_SLACK`]), and those
    /// `fire` says changed; returns their wakers (woken by the caller after releasing the
    /// lock), whether any was a change, and the keys and naps of those that only napped.
    fn take(
        &mut self,
        now: Instant,
        mut fire: impl FnMut(&K) -> bool,
    ) -> (Vec<Waker>, bool, Vec<(K, Duration)>) {
        let mut woken = Vec::new();
        let mut changed = false;
        let mut napped = Vec::new();
        self.entries.retain(|_, e| {
            let hit = fire(&e.key);
            changed |= hit;
            if hit || e.until <= now + NAP_SLACK {
                woken.push(e.waker.clone());
                if !hit {
                    napped.push((e.key, e.nap));
                }
                false
            } else {
                true
            }
        });
        (woken, changed, napped)
    }

    fn earliest(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.until).min()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

// ---- futex words ----------------------------------------------------------------------------

/// A futex word as the kernel sees it: its address and the value a waiter saw.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Word {
    addr: usize,
    expected: u32,
}

struct Words {
    table: Mutex<Table<Word>>,
    /// A futex in this process's memory that the reactor also sleeps on; bumped (and woken
    /// with the same shared FUTEX_WAKE as every other word) by each registration.
    bell: AtomicU32,
    /// The reactor is inside `futex_waitv` with exactly these words (a registration of one of
    /// them needs no doorbell).
    sleeping_on: Mutex<Vec<Word>>,
    /// The reactor is not asleep: a registration bumps the doorbell without waking it.
    awake: std::sync::atomic::AtomicBool,
}

/// This process's instance of a reactor.
struct Instance<T: 'static> {
    pid: u32,
    value: &'static T,
}

/// The reactor of the calling process, made by `make` on first use. A forked child inherits
/// the parent's statics but not its threads: an instance made by another pid is ignored and a
/// new one (with its own thread) is made. `lock` holds the pid making an instance (0: none);
/// one inherited from a parent that forked mid-way counts as free.
fn per_process<T>(
    slot: &AtomicPtr<Instance<T>>,
    lock: &AtomicU32,
    make: impl FnOnce() -> Option<&'static T>,
) -> Option<&'static T> {
    let me = mproc_segment::current_pid();
    let current = |slot: &AtomicPtr<Instance<T>>| {
        let p = slot.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in `slot` comes from `Box::leak` below and is never
        // freed, so it is valid for 'static.
        let inst = unsafe { p.as_ref() }?;
        (inst.pid == me).then_some(inst.value)
    };
    if let Some(v) = current(slot) {
        return Some(v);
    }
    loop {
        let held = lock.load(Ordering::Acquire);
        if held != me
            && lock
                .compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            break;
        }
        std::thread::yield_now();
    }
    let made = current(slot).or_else(|| {
        let value = make()?;
        let inst: &'static Instance<T> = Box::leak(Box::new(Instance { pid: me, value }));
        slot.store(std::ptr::from_ref(inst).cast_mut(), Ordering::Release);
        Some(value)
    });
    lock.store(0, Ordering::Release);
    made
}

/// How long after a reactor thread could not be started (out of threads: RLIMIT_NPROC, a
/// cgroup's pids.max) the next attempt waits; meanwhile futures use the re-poll fallback.
const RESTART_AFTER: Duration = Duration::from_millis(10);

/// Starts `run` on a thread of its own over `value`, which lives for the rest of the process
/// if the thread starts. If it cannot start, `value` is dropped again (its descriptors closed,
/// its memory freed: a process out of threads leaks nothing per attempt), and no new attempt
/// is made for [`RESTART_AFTER`] (`last_failure`: when the last one failed, ms since `BASE`).
fn start_thread<T: Sync + 'static>(
    value: T,
    name: &str,
    run: fn(&'static T),
    last_failure: &AtomicU64,
) -> Option<&'static T> {
    static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1;
    let failed = last_failure.load(Ordering::Relaxed);
    if failed != 0 && now < failed + RESTART_AFTER.as_millis() as u64 {
        return None;
    }
    let raw: *mut T = Box::into_raw(Box::new(value));
    // SAFETY: `raw` comes from `Box::into_raw`: valid, aligned and initialised; it is freed
    // below only if the thread never started.
    let shared: &'static T = unsafe { &*raw };
    let own = mproc_segment::OwnThread::mark();
    match std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _own = own;
            run(shared)
        }) {
        Ok(_) => Some(shared),
        Err(_) => {
            last_failure.store(now, Ordering::Relaxed);
            // SAFETY: the thread was not created, so its closure (the only other holder of
            // `shared`) was dropped without running; nothing refers to the allocation.
            drop(unsafe { Box::from_raw(raw) });
            None
        }
    }
}

/// The word reactor, started on first use in each process; `None` if its thread could not be
/// started (then a later call tries again, see [`start_thread`]).
fn words() -> Option<&'static Words> {
    static WORDS: AtomicPtr<Instance<Words>> = AtomicPtr::new(std::ptr::null_mut());
    static MAKING: AtomicU32 = AtomicU32::new(0);
    static FAILED: AtomicU64 = AtomicU64::new(0);
    per_process(&WORDS, &MAKING, || {
        let w = Words {
            table: Mutex::new(Table::default()),
            bell: AtomicU32::new(0),
            sleeping_on: Mutex::new(Vec::new()),
            awake: std::sync::atomic::AtomicBool::new(true),
        };
        // The thread lives as long as the process; it holds no resource but its stack.
        start_thread(w, "mproc-reactor", word_reactor, &FAILED)
    })
}

/// `struct futex_waitv` (linux/futex.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const FUTEX2_SIZE_U32: u32 = 0x02;

/// `futex_waitv` until `until`: `Ok(index woken)` or `Err(errno)`.
fn futex_waitv(v: &[FutexWaitv], until: Instant) -> Result<usize, i32> {
    // The timeout is absolute on CLOCK_MONOTONIC, the clock `Instant` reads.
    let left = until.saturating_duration_since(Instant::now());
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the local we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(left.subsec_nanos());
    let ts = libc::timespec {
        tv_sec: now.tv_sec
            + left.as_secs().min(1 << 31) as libc::time_t
            + (nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `v` is a live array of `v.len()` futex_waitv structs and `ts` a live timespec;
    // the kernel reads them and the words they name (it validates those addresses itself and
    // answers EFAULT for an unmapped one: nothing here is dereferenced in user space).
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            v.as_ptr(),
            v.len() as u32,
            0u32,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    } else {
        Ok(r as usize)
    }
}

/// Whether the kernel still sees `w.expected` at `w.addr` (a zero-timeout FUTEX_WAIT: EAGAIN
/// means changed, EFAULT unmapped, ETIMEDOUT unchanged).
fn unchanged(w: Word) -> bool {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: FUTEX_WAIT reads the word in the kernel (EFAULT if unmapped) and takes a
    // relative timeout; `zero` is a live timespec.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.addr as *const u32,
            libc::FUTEX_WAIT,
            w.expected,
            &zero as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

fn word_reactor(w: &'static Words) {
    let mut no_waitv = false;
    let mut changed: Vec<Word> = Vec::new();
    loop {
        // Awake (registrations ring the doorbell without a system call): fire what changed
        // or napped out.
        let (woken, by_change, napped) =
            lock(&w.table).take(Instant::now(), |k| no_waitv || changed.contains(k));
        changed.clear();
        wake_all(woken);
        // A future woken by a change is likely to wait again at once; one woken by its nap
        // (an idle wait looking for dead peers) is not worth staying awake for.
        if by_change && !no_waitv {
            linger(&w.bell);
        }
        // About to sleep: from here a registration wakes us. (SYNC POINT: `awake` is stored
        // before the doorbell is read, and a registrar bumps the doorbell before it reads
        // `awake`: either it sees us asleep and wakes us, or we see its bump.)
        w.awake.store(false, Ordering::SeqCst);
        let bell = w.bell.load(Ordering::SeqCst);
        let now = Instant::now();
        let (list, until) = {
            let t = lock(&w.table);
            let mut list: Vec<Word> = Vec::new();
            let mut overflow = false;
            // A wait woken only by its nap (nothing changed) registers again with the same
            // word and value: keep sleeping on it, with its next nap, so that registration
            // needs no doorbell (an idle wait then costs one reactor wake-up a nap, not two).
            let keys = t.entries.values().map(|e| e.key);
            for key in keys.chain(napped.iter().map(|n| n.0)) {
                if !list.contains(&key) {
                    if list.len() + 1 < WAITV_MAX {
                        list.push(key);
                    } else {
                        overflow = true;
                    }
                }
            }
            let next_nap = napped.iter().map(|n| now + n.1).min();
            let nap = (overflow || no_waitv).then_some(now + OVERFLOW_NAP);
            let until = [t.earliest(), nap, next_nap]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            *lock(&w.sleeping_on) = list.clone();
            (list, until)
        };
        let mut v = Vec::with_capacity(list.len() + 1);
        v.push(FutexWaitv {
            val: u64::from(bell),
            uaddr: w.bell.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        });
        v.extend(list.iter().map(|k| FutexWaitv {
            val: u64::from(k.expected),
            uaddr: k.addr as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        }));
        let r = if no_waitv {
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            Err(libc::ETIMEDOUT)
        } else {
            futex_waitv(&v, until)
        };
        w.awake.store(true, Ordering::SeqCst);
        lock(&w.sleeping_on).clear();
        match r {
            Ok(0) => {}
            Ok(i) => changed.extend(list.get(i - 1).copied()),
            Err(libc::EAGAIN) | Err(libc::EFAULT) => {
                changed.extend(list.iter().copied().filter(|&k| !unchanged(k)));
            }
            Err(libc::ENOSYS) => no_waitv = true,
            Err(_) => {} // ETIMEDOUT (naps fire at the top), EINTR
        }
    }
}

/// How long the word reactor stays awake after waking futures
/// ([`naps::REACTOR_LINGER`](crate::naps::REACTOR_LINGER)).
const LINGER: Duration = crate::naps::REACTOR_LINGER;

/// Waits up to [`LINGER`] for the doorbell to ring.
fn linger(bell: &AtomicU32) {
    let rung = bell.load(Ordering::SeqCst);
    let end = Instant::now() + LINGER;
    while bell.load(Ordering::SeqCst) == rung && Instant::now() < end {
        std::thread::yield_now();
    }
}

/// A future's registration on a futex word; dropping it removes the registration.
#[derive(Debug)]
#[must_use = "the registration is removed when this is dropped"]
pub struct WordWatch {
    id: u64,
}

impl WordWatch {
    /// Wakes `waker` once the 32-bit `word` no longer holds `expected` (or a wake-up was
    /// sent to it), or after `nap` at the latest.
    pub fn new(word: &AtomicU32, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        Self::at(word.as_ptr() as usize, expected, waker, nap)
    }

    /// As [`new`](Self::new), on the low 32 bits of a 64-bit word (as
    /// [`futex::wait_low`](crate::futex::wait_low) sleeps).
    pub fn new_low(word: &AtomicU64, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        let p = word.as_ptr().cast::<u32>();
        let low = if cfg!(target_endian = "big") {
            p.wrapping_add(1)
        } else {
            p
        };
        Self::at(low as usize, expected, waker, nap)
    }

    fn at(addr: usize, expected: u32, waker: &Waker, nap: Duration) -> WordWatch {
        let Some(w) = words() else {
            // No reactor thread (out of threads): have the caller poll again rather than hang.
            waker.wake_by_ref();
            return WordWatch { id: 0 };
        };
        let key = Word { addr, expected };
        let id = lock(&w.table).insert(key, waker, nap);
        // The reactor already sleeps on this very word and value: it will see the change.
        // Otherwise ring the doorbell so it re-reads the table.
        if !lock(&w.sleeping_on).contains(&key) {
            w.bell.fetch_add(1, Ordering::SeqCst);
            if !w.awake.load(Ordering::SeqCst) {
                crate::futex::wake(&w.bell, 1);
            }
        }
        WordWatch { id }
    }

    /// Ends the registration: `true` if the reactor had already fired it (woke the future),
    /// which may have consumed a wake-up meant for some waiter.
    pub fn finish(self) -> bool {
        let fired = words().is_none_or(|w| lock(&w.table).entries.remove(&self.id).is_none());
        std::mem::forget(self);
        fired
    }
}

impl Drop for WordWatch {
    fn drop(&mut self) {
        if let Some(w) = words() {
            lock(&w.table).entries.remove(&self.id);
        }
    }
}

// ---- file descriptors -----------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Fd {
    fd: RawFd,
    events: i16,
}

struct Fds {
    table: Mutex<Table<Fd>>,
    bell: OwnedFd,
}

/// The fd reactor of this process (as [`words`]).
fn fds() -> Option<&'static Fds> {
    static FDS: AtomicPtr<Instance<Fds>> = AtomicPtr::new(std::ptr::null_mut());
    static MAKING: AtomicU32 = AtomicU32::new(0);
    static FAILED: AtomicU64 = AtomicU64::new(0);
    per_process(&FDS, &MAKING, || {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return None;
        }
        // SAFETY: `raw` was just returned by eventfd and is owned by nobody else.
        let bell = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let f = Fds {
            table: Mutex::new(Table::default()),
            bell,
        };
        // If the thread cannot start, `f` (and the eventfd) is dropped again.
        start_thread(f, "mproc-fd-reactor", fd_reactor, &FAILED)
    })
}

fn fd_reactor(f: &'static Fds) {
    let mut fired: Vec<Fd> = Vec::new();
    loop {
        let now = Instant::now();
        let (woken, list, until) = {
            let mut t = lock(&f.table);
            let (woken, _, _) = t.take(now, |k| fired.contains(k));
            let mut list: Vec<Fd> = Vec::new();
            for e in t.entries.values() {
                if !list.contains(&e.key) {
                    list.push(e.key);
                }
            }
            (woken, list, t.earliest())
        };
        fired.clear();
        wake_all(woken);
        let mut pfds: Vec<libc::pollfd> = Vec::with_capacity(list.len() + 1);
        pfds.push(libc::pollfd {
            fd: f.bell.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        pfds.extend(list.iter().map(|k| libc::pollfd {
            fd: k.fd,
            events: k.events,
            revents: 0,
        }));
        let ms = until.map_or(-1, |u| {
            let left = u.saturating_duration_since(Instant::now());
            // Round up: waking a little late is fine, early means a wasted turn.
            left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
        });
        // SAFETY: `pfds` is a live array of pollfd of the length passed; poll only writes
        // `revents`. A registered fd that was closed meanwhile comes back as POLLNVAL.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            continue;
        }
        if pfds[0].revents != 0 {
            let mut buf = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a live local buffer (drains the eventfd).
            let _ = unsafe { libc::read(pfds[0].fd, buf.as_mut_ptr().cast(), 8) };
        }
        for (p, k) in pfds[1..].iter().zip(&list) {
            if p.revents != 0 {
                fired.push(*k);
            }
        }
    }
}

/// A future's registration on a file descriptor; dropping it removes the registration.
#[derive(Debug)]
#[must_use = "the registration is removed when this is dropped"]
pub struct FdWatch {
    id: Option<u64>,
}

impl FdWatch {
    /// Wakes `waker` once `fd` is readable (`POLLIN`; errors and hang-ups count), or after
    /// `nap` at the latest. Without a reactor (the process could not start its thread or
    /// make an eventfd) the waker is woken at once, so a caller re-polls rather than hangs.
    pub fn readable(fd: BorrowedFd<'_>, waker: &Waker, nap: Duration) -> FdWatch {
        let Some(f) = fds() else {
            waker.wake_by_ref();
            return FdWatch { id: None };
        };
        let key = Fd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
        };
        let id = lock(&f.table).insert(key, waker, nap);
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local to the eventfd (the doorbell).
        let _ = unsafe { libc::write(f.bell.as_raw_fd(), one.as_ptr().cast(), 8) };
        FdWatch { id: Some(id) }
    }
}

impl Drop for FdWatch {
    fn drop(&mut self) {
        if let (Some(id), Some(f)) = (self.id, fds()) {
            lock(&f.table).entries.remove(&id);
        }
    }
}
