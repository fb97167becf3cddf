//! Loom models of the body arena's allocator: every interleaving (up to a preemption bound)
//! of producers allocating, filling and handing over chunks while a consumer reads and frees
//! them. The units' bytes are loom `UnsafeCell`s, so a chunk handed to two owners at once, or
//! reused while still being read, is reported as a data race; the models also check that the
//! arena is empty (tail == head) once everything has been freed.

use std::collections::VecDeque;

use loom::cell::UnsafeCell;
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::arena::{Alloc, Arena, ArenaHeader, Entries};
use crate::atomic::{AtomicU64, Ordering};
use mproc_sync::Parking;

const UNITS: usize = 4;

struct Model {
    hdr: ArenaHeader,
    words: Vec<AtomicU64>,
    links: Vec<AtomicU64>,
    data: Vec<UnsafeCell<u64>>,
    /// Stands in for the ring: chunks handed from producers to the consumer, with the ring
    /// position each was linked to.
    handoff: Mutex<VecDeque<(u64, u64, u64)>>,
    handed: AtomicU64,
    ready: Parking,
    next_ring_pos: AtomicU64,
}

impl Entries for &Model {
    fn word(&self, unit: usize) -> &AtomicU64 {
        &self.words[unit]
    }
    fn link(&self, unit: usize) -> &AtomicU64 {
        &self.links[unit]
    }
    fn is_alive(&self, _pid: u32) -> bool {
        true
    }
    fn ring_holds(&self, _pos: u64) -> bool {
        true
    }
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            hdr: ArenaHeader::default(),
            words: (0..UNITS).map(|_| AtomicU64::new(0)).collect(),
            links: (0..UNITS).map(|_| AtomicU64::new(0)).collect(),
            data: (0..UNITS).map(|_| UnsafeCell::new(0)).collect(),
            handoff: Mutex::new(VecDeque::new()),
            handed: AtomicU64::new(0),
            ready: Parking::new(),
            next_ring_pos: AtomicU64::new(0),
        })
    }

    fn arena(&self) -> Arena<'_, &Model> {
        Arena {
            hdr: &self.hdr,
            entries: self,
            units: UNITS as u64,
            shift: UNITS.trailing_zeros(),
        }
    }

    /// Allocates `len` units (sleeping on the arena's parking place when full), writes
    /// `value` into each, links the chunk and hands it over.
    fn produce(&self, me: u32, len: u64, value: u64) {
        let arena = self.arena();
        let pos = self
            .hdr
            .space
            .block_on(None, || match arena.try_alloc(me, len) {
                Alloc::Done(pos) => Some(pos),
                Alloc::NoSpace => None,
            })
            .unwrap();
        for k in 0..len {
            let unit = arena.unit(pos + k);
            // SAFETY: the chunk is ours (Writing(me)); loom reports any other access.
            self.data[unit].with_mut(|p| unsafe { *p = value });
        }
        let ring_pos = self.next_ring_pos.fetch_add(1, Ordering::SeqCst);
        assert!(arena.link(pos, me, ring_pos));
        self.handoff.lock().unwrap().push_back((pos, len, ring_pos));
        self.handed.fetch_add(1, Ordering::SeqCst);
        self.ready.wake_all();
    }

    /// Takes handed-over chunk number `k` (sleeping until it is there), checks and frees it;
    /// returns its value.
    fn consume(&self, k: u64) -> u64 {
        let arena = self.arena();
        self.ready
            .block_on(None, || {
                (self.handed.load(Ordering::SeqCst) > k).then_some(())
            })
            .unwrap();
        let (pos, len, ring_pos) = self.handoff.lock().unwrap().pop_front().unwrap();
        let word = arena.linked(pos, len, ring_pos).expect("a linked chunk");
        let unit = arena.unit(pos);
        // SAFETY: the chunk is Linked to a ring position only we hold; loom checks.
        let value = self.data[unit].with(|p| unsafe { *p });
        for k in 1..len {
            // SAFETY: as above.
            let v = self.data[arena.unit(pos + k)].with(|p| unsafe { *p });
            assert_eq!(v, value, "a chunk's units were written by two producers");
        }
        assert!(arena.free(pos, word));
        value
    }

    fn assert_empty(&self) {
        self.arena().advance_tail(false);
        let h = self.hdr.head.load(Ordering::SeqCst);
        let t = self.hdr.tail.load(Ordering::SeqCst);
        assert_eq!(h, t, "freed chunks left the arena non-empty");
    }
}

fn model(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b.check(f);
}

/// Two producers whose chunks (3 and 2 of 4 units) cannot both fit: one waits for the
/// consumer to free the other's, then pads to the end of the lap and wraps.
#[test]
fn two_allocating_producers_one_freeing_consumer() {
    model(2, || {
        let m = Model::new();
        let producers: Vec<_> = [(1u32, 3u64, 10u64), (2, 2, 20)]
            .into_iter()
            .map(|(me, len, v)| {
                let m = m.clone();
                thread::spawn(move || m.produce(me, len, v))
            })
            .collect();
        let mut got = vec![m.consume(0), m.consume(1)];
        for p in producers {
            p.join().unwrap();
        }
        got.sort();
        assert_eq!(got, vec![10, 20]);
        m.assert_empty();
    });
}

/// One producer allocating chunks of 2, 3 and 2 units in turn while the consumer frees them:
/// wrap-around, padding and rewinding an empty arena to unit 0, in every interleaving.
#[test]
fn allocation_wraps_and_reuses_freed_space() {
    model(3, || {
        let m = Model::new();
        let producer = {
            let m = m.clone();
            thread::spawn(move || {
                for (len, v) in [(2, 1), (3, 2), (2, 3)] {
                    m.produce(1, len, v);
                }
            })
        };
        let got = [m.consume(0), m.consume(1), m.consume(2)];
        producer.join().unwrap();
        assert_eq!(got, [1, 2, 3]);
        m.assert_empty();
    });
}
