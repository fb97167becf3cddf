//! [`ProcessCell`]: a value made once per process, the one place mproc keeps a per-process
//! singleton (the reactor threads of `mproc-sync`, the forker thread of `mproc-pool`).

use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use crate::current_pid;

/// One process's value, tagged with the process that made it.
struct Made<T: 'static> {
    pid: u32,
    value: &'static T,
}

/// A value made on first use in each process, for the rest of that process's life.
///
/// A forked child inherits its parent's statics but not its threads, so a `OnceLock` holding
/// a thread's handle would hand the child a thread that does not exist (and a `OnceLock` that
/// another thread of the parent was initialising at the fork would block the child for ever).
/// A `ProcessCell` tags its value with the pid that made it: in a child the parent's value is
/// ignored and a new one is made. Only one thread of a process makes it; a making that a
/// fork interrupted (the maker's pid is the parent's) counts as free in the child.
///
/// Values live until the process ends (a forked child's copy of its parent's value is
/// leaked with the rest of the parent's heap, which the child does not own either).
///
/// ```
/// use mproc_segment::ProcessCell;
/// static ANSWER: ProcessCell<u64> = ProcessCell::new();
/// let v = ANSWER.get_or_try_make(|| Ok::<_, ()>(Box::leak(Box::new(42))));
/// assert_eq!(v, Ok(&42));
/// assert_eq!(ANSWER.get(), Some(&42));
/// ```
pub struct ProcessCell<T: 'static> {
    made: AtomicPtr<Made<T>>,
    /// The pid of the thread's process making the value now (0: nobody).
    making: AtomicU32,
}

impl<T: 'static> ProcessCell<T> {
    /// An empty cell (for a `static`).
    pub const fn new() -> ProcessCell<T> {
        ProcessCell {
            made: AtomicPtr::new(std::ptr::null_mut()),
            making: AtomicU32::new(0),
        }
    }
}

/// Frees the making lock when dropped (also if `make` panics).
struct Making<'a>(&'a AtomicU32);

impl Drop for Making<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

// `T: Sync`: every thread of the process gets the same `&T`.
impl<T: Sync + 'static> ProcessCell<T> {
    /// The calling process's value, if it has been made.
    pub fn get(&self) -> Option<&'static T> {
        let p = self.made.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in `made` comes from `Box::leak` in `get_or_try_make`
        // and is never freed, so it is valid for 'static.
        let made = unsafe { p.as_ref() }?;
        (made.pid == current_pid()).then_some(made.value)
    }

    /// A value made by another process (the parent this one was forked from), if the cell
    /// holds one: what a child may need to let go of (a descriptor of its parent's) when it
    /// makes its own. Never the calling process's own value.
    pub fn inherited(&self) -> Option<&'static T> {
        let p = self.made.load(Ordering::Acquire);
        // SAFETY: as in `get`: leaked, never freed.
        let made = unsafe { p.as_ref() }?;
        (made.pid != current_pid()).then_some(made.value)
    }

    /// The calling process's value, made by `make` if this process has none yet. Threads
    /// that call it meanwhile wait for the one making it; if `make` fails, its error is
    /// returned and the next call tries again.
    pub fn get_or_try_make<E>(
        &self,
        make: impl FnOnce() -> Result<&'static T, E>,
    ) -> Result<&'static T, E> {
        if let Some(v) = self.get() {
            return Ok(v);
        }
        let me = current_pid();
        loop {
            let held = self.making.load(Ordering::Acquire);
            if held != me
                && self
                    .making
                    .compare_exchange(held, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                break;
            }
            std::thread::yield_now();
        }
        let _making = Making(&self.making);
        match self.get() {
            Some(v) => Ok(v),
            None => make().inspect(|&value| {
                let made: &'static Made<T> = Box::leak(Box::new(Made { pid: me, value }));
                self.made
                    .store(std::ptr::from_ref(made).cast_mut(), Ordering::Release);
            }),
        }
    }
}

impl<T: 'static> Default for ProcessCell<T> {
    fn default() -> Self {
        ProcessCell::new()
    }
}

impl<T: 'static> std::fmt::Debug for ProcessCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessCell").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn made_once_per_process_by_one_thread() {
        static CELL: ProcessCell<u32> = ProcessCell::new();
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| {
                    CELL.get_or_try_make(|| {
                        MADE.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, ()>(Box::leak(Box::new(7)))
                    })
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), Ok(&7));
        }
        assert_eq!(MADE.load(Ordering::SeqCst), 1);
        assert!(CELL.inherited().is_none(), "our own value is not inherited");
    }

    #[test]
    fn a_failed_make_is_tried_again() {
        static CELL: ProcessCell<u32> = ProcessCell::new();
        assert_eq!(CELL.get_or_try_make(|| Err("no")), Err("no"));
        assert_eq!(CELL.get(), None);
        assert_eq!(CELL.get_or_try_make(|| Ok::<_, ()>(&3)), Ok(&3));
    }

    #[test]
    fn a_forked_child_makes_its_own_and_sees_the_parents_as_inherited() {
        static CELL: ProcessCell<u32> = ProcessCell::new();
        let parent = CELL.get_or_try_make(|| Ok::<_, ()>(&1)).unwrap();
        assert_eq!(*parent, 1);
        let child = mproc_testkit::fork_child(|| {
            if CELL.get().is_some() || CELL.inherited() != Some(&1) {
                return 1;
            }
            match CELL.get_or_try_make(|| Ok::<_, ()>(&2)) {
                Ok(&2) if CELL.get() == Some(&2) => 0,
                _ => 2,
            }
        });
        child.assert_success();
        assert_eq!(CELL.get(), Some(&1), "the parent keeps its own");
    }
}
