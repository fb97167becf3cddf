//! Rust and Python share memory by name: Rust creates an `Array<f64>`, a Python process
//! (standard library only) doubles it in place, Rust checks; then Python creates a
//! `SharedMemory` segment, Rust doubles it through a `RawArray` view, Python checks.
//!
//! Run with `cargo run --release --example python_interop` (needs `python3` on the PATH).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use mproc::array::{Array, PYTHON_OFFSET, RawArray};
use mproc::segment::Segment;

const N: usize = 1000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/python/interop.py");

    // Rust -> Python -> Rust.
    let name = format!("mproc-example-py-{}", std::process::id());
    let values: Vec<f64> = (0..N).map(|i| i as f64).collect();
    let array: Array<f64> = Array::create_from(&name, &values)?;
    let status = Command::new("python3")
        .args([script, "double", &name, &N.to_string()])
        .status()?;
    if !status.success() {
        return Err(format!("python exited with {status}").into());
    }
    let doubled = array.to_vec()?;
    let ok = doubled
        .iter()
        .enumerate()
        .all(|(i, &x)| x == 2.0 * i as f64);
    println!(
        "Rust created /{name} ({N} f64 at byte {PYTHON_OFFSET}); Python doubled it: {}",
        if ok { "ok" } else { "WRONG" }
    );

    // Python -> Rust -> Python.
    let py_name = format!("mproc-example-from-py-{}", std::process::id());
    let mut python = Command::new("python3")
        .args([script, "create", &py_name, &N.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(python.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let view: RawArray<f64> = RawArray::from_segment(Segment::open_raw(&py_name)?, 0, N)?;
    let twice: Vec<f64> = view.to_vec()?.iter().map(|x| x * 2.0).collect();
    view.copy_from_slice(&twice)?;
    python
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(b"done\n")?;
    let status = python.wait()?;
    println!(
        "Python created /{py_name}; Rust doubled it; Python checked: {}",
        if status.success() { "ok" } else { "WRONG" }
    );
    if !ok || !status.success() {
        return Err("interop check failed".into());
    }
    Ok(())
}
