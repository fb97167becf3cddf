//! Arrays and values across real processes, their typed errors, and Python interop.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use mproc_array::{Array, ArrayError, AtomicValue, PYTHON_OFFSET, RawArray, Value};
use mproc_segment::{Segment, SegmentError};
use mproc_sync::LockError;
use mproc_testkit::{Child, Exit, fork_child, unique_name};

#[test]
fn four_processes_fill_disjoint_quarters() {
    let a: Array<u64> = Array::new(4000).unwrap();
    let kids: Vec<Child> = (0..4usize)
        .map(|q| {
            let a = &a;
            fork_child(move || {
                let mut g = a.lock().unwrap();
                for i in q * 1000..(q + 1) * 1000 {
                    g[i] = (i * i) as u64;
                }
                0
            })
        })
        .collect();
    for k in kids {
        k.assert_success();
    }
    let v = a.to_vec().unwrap();
    assert!(v.iter().enumerate().all(|(i, &x)| x == (i * i) as u64));
}

#[test]
fn locked_read_modify_write_loses_no_update() {
    let name = unique_name("array-rmw");
    let a: Array<u64> = Array::create(&name, 1).unwrap();
    let work = || {
        let a: Array<u64> = Array::open(&name).unwrap();
        for _ in 0..100_000 {
            let mut g = a.lock().unwrap();
            g[0] += 1;
        }
        0
    };
    let (x, y) = (fork_child(work), fork_child(work));
    x.assert_success();
    y.assert_success();
    assert_eq!(a.get(0), Ok(200_000));
}

#[test]
fn atomic_fetch_add_from_four_processes_is_exact() {
    let v: AtomicValue<u64> = AtomicValue::new(0).unwrap();
    let kids: Vec<Child> = (0..4)
        .map(|_| {
            fork_child(|| {
                for _ in 0..50_000 {
                    v.fetch_add(1);
                }
                0
            })
        })
        .collect();
    for k in kids {
        k.assert_success();
    }
    assert_eq!(v.load(), 200_000);
    assert_eq!(v.compare_exchange(200_000, 7), Ok(200_000));
    assert_eq!(v.compare_exchange(200_000, 8), Err(7));
    assert_eq!(v.swap(1), 7);
    assert_eq!(v.fetch_sub(1), 1);
    v.store(3);
    assert_eq!(v.load(), 3);
    // The two kinds of value do not open as each other: their accesses must not meet.
    let name = mproc_testkit::unique_name("atomic-kind");
    let named = AtomicValue::<u64>::create(&name, 1).unwrap();
    assert!(Value::<u64>::open(&name).is_err());
    assert_eq!(AtomicValue::<u64>::open(&name).unwrap().load(), 1);
    drop(named);
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
struct Particle {
    pos: [f32; 3],
    mass: f32,
    id: u64,
}

#[test]
fn a_user_pod_struct_is_an_element_type() {
    let name = unique_name("array-struct");
    let p = Particle {
        pos: [1.0, 2.0, 3.0],
        mass: 4.0,
        id: 9,
    };
    let a: Array<Particle> = Array::create_from(&name, &[p; 8]).unwrap();
    fork_child(|| {
        let a: Array<Particle> = Array::open(&name).unwrap();
        let mut q = a.get(3).unwrap();
        q.id = 33;
        a.set(3, q).unwrap();
        0
    })
    .assert_success();
    assert_eq!(a.get(3).unwrap().id, 33);
    assert_eq!(a.get(2).unwrap(), p);
    // A Value of the struct, updated under the lock.
    let v: Value<Particle> = Value::new(p).unwrap();
    v.update(|x| x.mass = 5.0).unwrap();
    assert_eq!(v.get().unwrap().mass, 5.0);
}

#[test]
fn typed_errors() {
    let name = unique_name("array-errors");
    let a: Array<f64> = Array::create(&name, 4).unwrap();
    assert_eq!(a.get(4), Err(ArrayError::OutOfRange { index: 4, len: 4 }));
    assert_eq!(
        a.set(9, 1.0),
        Err(ArrayError::OutOfRange { index: 9, len: 4 })
    );
    assert_eq!(
        a.copy_from_slice(&[1.0; 3]),
        Err(ArrayError::LengthMismatch {
            expected: 4,
            found: 3
        })
    );
    let mut out = [0.0; 5];
    assert_eq!(
        a.copy_to_slice(&mut out),
        Err(ArrayError::LengthMismatch {
            expected: 4,
            found: 5
        })
    );
    assert_eq!(
        a.to_vec(),
        Ok(vec![0.0; 4]),
        "a failed copy changes nothing"
    );
    assert!(matches!(
        Array::<u64>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        Array::<f32>::open(&name),
        Err(SegmentError::TypeMismatch { .. })
    ));
    assert!(matches!(
        Value::<f64>::open(&name),
        Err(SegmentError::KindMismatch { .. })
    ));
    assert!(Array::<f64>::new(0).is_err());
    let seg = Segment::anonymous(16).unwrap();
    assert!(RawArray::<u64>::from_segment(seg, 8, 2).is_err());
}

#[test]
fn a_writer_killed_inside_the_lock_makes_the_array_report_inconsistency() {
    let a: Array<u32> = Array::new(2).unwrap();
    let (r, w) = rustix::pipe::pipe().unwrap();
    let mut child = fork_child(|| {
        let mut g = a.lock().unwrap();
        g[0] = 1; // half of an update that should keep g[0] == g[1]
        std::mem::forget(g);
        rustix::io::write(&w, b"x").unwrap();
        loop {
            rustix::event::pause();
        }
    });
    let mut b = [0u8];
    rustix::io::read(&r, &mut b).unwrap();
    child.signal(rustix::process::Signal::KILL);
    assert_eq!(child.wait().exit, Exit::Signaled(9));
    assert_eq!(a.get(0), Err(ArrayError::Inconsistent));
    match a.lock() {
        Err(LockError::OwnerDied(mut g)) => {
            g[1] = g[0]; // repair the invariant
            g.make_consistent();
        }
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert_eq!(a.to_vec(), Ok(vec![1, 1]));
}

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("python3 not found: skipping the Python interop test");
    }
    ok.then_some("python3")
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/interop.py")
}

#[test]
fn python_reads_and_doubles_a_rust_array() {
    let Some(py) = python() else { return };
    assert_eq!(PYTHON_OFFSET, 320);
    let name = unique_name("array-py-double");
    let values: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
    let a: Array<f64> = Array::create_from(&name, &values).unwrap();
    let mut child = Child::spawn(
        Command::new(py)
            .arg(script())
            .args(["double", &name, "1000"]),
    )
    .unwrap();
    assert_eq!(
        child.wait_deadline(Duration::from_secs(60)).exit,
        Exit::Code(0)
    );
    let doubled = a.to_vec().unwrap();
    assert!(doubled.iter().enumerate().all(|(i, &x)| x == i as f64));
    // Python did not unlink what Rust owns.
    assert!(Array::<f64>::open(&name).is_ok());
}

#[test]
fn rust_doubles_an_array_python_created() {
    let Some(py) = python() else { return };
    let name = unique_name("array-py-create");
    let mut cmd = Command::new(py);
    cmd.arg(script())
        .args(["create", &name, "500"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // Reaped (and killed on failure) through the testkit's Child, by pid.
    #[allow(clippy::zombie_processes)]
    let mut proc = cmd.spawn().unwrap();
    let mut guard = Child::from_pid(proc.id() as i32);
    let mut line = String::new();
    BufReader::new(proc.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let view: RawArray<f64> =
        RawArray::from_segment(Segment::open_raw(&name).unwrap(), 0, 500).unwrap();
    let doubled: Vec<f64> = view.to_vec().unwrap().iter().map(|x| x * 2.0).collect();
    view.copy_from_slice(&doubled).unwrap();
    proc.stdin.take().unwrap().write_all(b"done\n").unwrap();
    assert_eq!(
        guard.wait_deadline(Duration::from_secs(60)).exit,
        Exit::Code(0)
    );
    assert!(matches!(
        Segment::open_raw(&name),
        Err(SegmentError::NotFound { .. })
    ));
}

/// An `AtomicValue`'s element sits where the README tells Python readers to look: byte 320 of
/// the shared-memory object (`mproc_array::PYTHON_OFFSET`).
#[test]
fn an_atomic_value_lives_at_byte_320_for_python_readers() {
    let name = mproc_testkit::unique_name("atomic-at-320");
    let v = mproc_array::AtomicValue::<u64>::create(&name, 0x1122_3344_5566_7788).unwrap();
    v.fetch_add(1);
    assert_eq!(mproc_array::PYTHON_OFFSET, 320);
    let bytes = std::fs::read(format!("/dev/shm/{name}")).unwrap();
    assert_eq!(
        u64::from_ne_bytes(bytes[320..328].try_into().unwrap()),
        0x1122_3344_5566_7789
    );
}
