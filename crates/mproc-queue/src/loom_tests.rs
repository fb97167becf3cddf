//! Loom models of the ring: every interleaving (up to a preemption bound) of a few producers
//! and consumers delivers each item exactly once, with close. The slot bytes are loom
//! `UnsafeCell`s, so loom also reports any data race on a slot (a producer overwriting bytes
//! a consumer is still reading, or the reverse).

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use crate::atomic::AtomicU64;
use crate::ring::{Pop, Push, Ring, RingHeader, Slots};

struct ModelSlots {
    words: Vec<AtomicU64>,
    data: Vec<UnsafeCell<[u8; 8]>>,
}

impl Slots for ModelSlots {
    fn word(&self, idx: usize) -> &AtomicU64 {
        &self.words[idx]
    }
    unsafe fn with_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: the ring guarantees exclusive access while the slot is Writing; loom checks.
        self.data[idx].with_mut(|p| f(unsafe { &mut *p }))
    }
    unsafe fn with<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: the ring guarantees no writer while the slot is Reading; loom checks.
        self.data[idx].with(|p| f(unsafe { &*p }))
    }
    fn is_alive(&self, _pid: u32) -> bool {
        true
    }
}

struct Model {
    hdr: RingHeader,
    slots: ModelSlots,
    cap: usize,
}

impl Model {
    fn new(cap: usize) -> Arc<Model> {
        Arc::new(Model {
            hdr: RingHeader::default(),
            slots: ModelSlots {
                words: (0..cap).map(|_| AtomicU64::new(0)).collect(),
                data: (0..cap).map(|_| UnsafeCell::new([0; 8])).collect(),
            },
            cap,
        })
    }
    fn ring(&self) -> Ring<'_, &ModelSlots> {
        Ring {
            hdr: &self.hdr,
            slots: &self.slots,
            mask: self.cap as u64 - 1,
            shift: self.cap.trailing_zeros(),
        }
    }
    /// A blocking push through the real parking protocol (so lost wake-ups show as
    /// deadlocks).
    fn push(&self, me: u32, v: u64) -> Push {
        let ring = self.ring();
        self.hdr
            .not_full
            .block_on(None, || {
                match ring.try_push(me, true, |s, _| s.copy_from_slice(&v.to_ne_bytes())) {
                    Push::Full => None,
                    r => Some(r),
                }
            })
            .unwrap()
    }
    /// A blocking pop through the real parking protocol.
    fn pop(&self, me: u32) -> Option<u64> {
        let ring = self.ring();
        let r = self.hdr.not_empty.block_on(None, || {
            match ring.try_pop(me, true, |s, _| u64::from_ne_bytes(s.try_into().unwrap())) {
                Pop::Empty | Pop::InProgress => None,
                r => Some(r),
            }
        });
        match r.unwrap() {
            Pop::Item(v) => Some(v),
            _ => None,
        }
    }
}

impl<S: Slots> Slots for &S {
    fn word(&self, idx: usize) -> &AtomicU64 {
        (*self).word(idx)
    }
    unsafe fn with_mut<R>(&self, idx: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (*self).with_mut(idx, f) }
    }
    unsafe fn with<R>(&self, idx: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        // SAFETY: forwarded with the caller's guarantee.
        unsafe { (*self).with(idx, f) }
    }
    fn is_alive(&self, pid: u32) -> bool {
        (*self).is_alive(pid)
    }
}

/// Explores every interleaving with at most `bound` preemptions (the exhaustive space of three
/// threads over a futex model is too large for CI; loom's documentation recommends 2–3).
fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(f);
}

#[test]
fn two_producers_one_consumer_with_close() {
    model(3, || {
        let m = Model::new(2);
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let m = m.clone();
                thread::spawn(move || m.push(p as u32 + 1, p + 10))
            })
            .collect();
        let mut got = vec![m.pop(9).unwrap(), m.pop(9).unwrap()];
        for p in producers {
            assert_eq!(p.join().unwrap(), Push::Done);
        }
        m.ring().close();
        assert_eq!(m.pop(9), None);
        got.sort();
        assert_eq!(got, vec![10, 11]);
    });
}

#[test]
fn one_producer_two_consumers_with_close() {
    model(2, || {
        let m = Model::new(2);
        let consumers: Vec<_> = (0..2u32)
            .map(|c| {
                let m = m.clone();
                thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(v) = m.pop(c + 5) {
                        got.push(v);
                    }
                    got
                })
            })
            .collect();
        for v in 0..2u64 {
            assert_eq!(m.push(1, v), Push::Done);
        }
        m.ring().close();
        assert_eq!(m.push(1, 99), Push::Closed);
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| {
                let got = c.join().unwrap();
                // One producer: each consumer sees its items in order.
                assert!(got.windows(2).all(|w| w[0] < w[1]));
                got
            })
            .collect();
        all.sort();
        assert_eq!(all, vec![0, 1]);
    });
}

impl Model {
    /// Puts `values` in runs, falling back to the blocking single push when no run can be
    /// claimed (as `PodQueue::put_many` does).
    fn push_run(&self, me: u32, values: &[u64]) -> Push {
        let ring = self.ring();
        let mut done = 0;
        while done < values.len() {
            match ring.claim_push_run(me, values.len() - done) {
                None => return Push::Closed,
                Some(run) if run.len > 0 => {
                    ring.fill_run(&run, |s, i| {
                        s.copy_from_slice(&values[done + i].to_ne_bytes())
                    });
                    done += run.len;
                    ring.publish_run(run);
                }
                Some(_) => match self.push(me, values[done]) {
                    Push::Done => done += 1,
                    other => return other,
                },
            }
        }
        Push::Done
    }

    /// Takes one value (blocking), then up to `max - 1` more in runs (as
    /// `PodQueue::get_many` does); empty once the queue is closed and drained.
    fn pop_run(&self, me: u32, max: usize) -> Vec<u64> {
        let mut got = Vec::new();
        let Some(first) = self.pop(me) else {
            return got;
        };
        got.push(first);
        let ring = self.ring();
        let run = ring.claim_pop_run(me, max - 1);
        ring.read_run(&run, |s, _| {
            got.push(u64::from_ne_bytes(s.try_into().unwrap()))
        });
        ring.release_run(run);
        got
    }
}

#[test]
fn runs_two_producers_one_consumer() {
    model(2, || {
        let m = Model::new(2);
        let runner = {
            let m = m.clone();
            thread::spawn(move || m.push_run(1, &[10, 11]))
        };
        let single = {
            let m = m.clone();
            thread::spawn(move || m.push(2, 20))
        };
        let mut got = Vec::new();
        while got.len() < 3 {
            got.extend(m.pop_run(9, 2));
        }
        assert_eq!(runner.join().unwrap(), Push::Done);
        assert_eq!(single.join().unwrap(), Push::Done);
        // One producer's run arrives in order.
        let run: Vec<u64> = got.iter().copied().filter(|&v| v != 20).collect();
        assert_eq!(run, vec![10, 11]);
        got.sort();
        assert_eq!(got, vec![10, 11, 20]);
    });
}

#[test]
fn runs_one_producer_two_consumers_with_close() {
    model(2, || {
        let m = Model::new(2);
        let runner = {
            let m = m.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let run = m.pop_run(5, 2);
                    if run.is_empty() {
                        return got;
                    }
                    got.extend(run);
                }
            })
        };
        let single = {
            let m = m.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                while let Some(v) = m.pop(6) {
                    got.push(v);
                }
                got
            })
        };
        assert_eq!(m.push_run(1, &[0, 1]), Push::Done);
        m.ring().close();
        let mut all = runner.join().unwrap();
        all.extend(single.join().unwrap());
        all.sort();
        assert_eq!(all, vec![0, 1]);
    });
}
