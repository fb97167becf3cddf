//! The `mproc` Python package against `multiprocessing` (and faster-fifo) in the same run:
//! benches/python/py_package.py, in a virtual environment under `target/` that this module
//! makes, fills from PyPI (maturin, numpy, faster-fifo) and builds the package into.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::stats::Stat;
use crate::{Row, Rule};

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The environment's interpreter, with the package built into it.
fn env() -> Result<PathBuf, String> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let dir = root.join("target/py-bench-venv");
    let python = dir.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&dir))?;
    }
    let has = |module: &str| {
        Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("numpy") || !dir.join("bin/maturin").exists() {
        eprintln!(
            "  installing maturin and numpy from PyPI into {}",
            dir.display()
        );
        run(Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "-q",
            "maturin>=1.5,<2",
            "numpy",
        ]))?;
    }
    if !has("UltraDict") || !has("atomics") {
        // A reference only, as faster-fifo.
        if let Err(e) =
            run(Command::new(&python).args(["-m", "pip", "install", "-q", "UltraDict", "atomics"]))
        {
            eprintln!("mproc-bench: UltraDict not installed ({e}): its rows are empty");
        }
    }
    if !has("faster_fifo") {
        // A reference only: without it (no wheel, no compiler) its rows say so.
        if let Err(e) =
            run(Command::new(&python).args(["-m", "pip", "install", "-q", "faster-fifo"]))
        {
            eprintln!("mproc-bench: faster-fifo not installed ({e}): its rows are empty");
        }
    }
    eprintln!("  building the mproc Python package (maturin develop --release)");
    run(Command::new(dir.join("bin/maturin"))
        .args(["develop", "--release", "-q"])
        .current_dir(root.join("python"))
        .env("VIRTUAL_ENV", &dir))?;
    Ok(python)
}

/// The Python package rows. Without Python tooling they say why and come back empty.
pub(crate) fn rows(quick: bool) -> Vec<Row> {
    let figures = env().and_then(|python| {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../benches/python/py_package.py"
        );
        eprintln!("  the Python package against multiprocessing and faster-fifo");
        let mut cmd = Command::new(python);
        cmd.arg(script);
        if quick {
            cmd.arg("--quick");
        }
        crate::figures::parse_python(cmd)
    });
    let figures = match figures {
        Ok(f) => f,
        Err(why) => {
            eprintln!("mproc-bench: Python package rows skipped: {why}");
            return Vec::new();
        }
    };
    let get = |k: &str| -> Option<Stat> { figures.get(k).cloned() };
    let row = |what: &str, ours: &str, name: &str, theirs: &str, rule| Row {
        what: what.into(),
        mproc: get(ours),
        baseline_name: name.into(),
        baseline: get(theirs),
        rule,
    };
    let small = "Python `mproc.Queue` 1→1, small objects `(7, 2.5)`, µs/msg";
    vec![
        row(
            small,
            "mproc_queue_small",
            "`multiprocessing.Queue`",
            "mp_queue_small",
            Rule::FasterBy(3.0),
        ),
        row(
            small,
            "mproc_queue_small",
            "faster-fifo `Queue`",
            "ffifo_queue_small",
            Rule::FasterBy(1.5),
        ),
        row(
            "Python `mproc.Queue` 1→1, 1 KiB `bytes`, µs/msg",
            "mproc_queue_1k",
            "`multiprocessing.Queue`",
            "mp_queue_1k",
            Rule::FasterBy(10.0),
        ),
        row(
            "Python `mproc.Queue` 1→1, 1 KiB `bytes`, µs/msg",
            "mproc_queue_1k",
            "faster-fifo `Queue`",
            "ffifo_queue_1k",
            Rule::Info,
        ),
        row(
            "Python `mproc.Queue` 1→1, 1 MiB `bytes`, µs/msg",
            "mproc_queue_1m",
            "`multiprocessing.Queue`",
            "mp_queue_1m",
            Rule::FasterBy(20.0),
        ),
        row(
            "Python `mproc.Dict` `d[k]`, 1000 int keys, ns",
            "mproc_dict_get",
            "`Manager().dict()`",
            "mp_dict_get",
            Rule::Info,
        ),
        row(
            "Python `mproc.Dict` `d[k] = v`, 1000 int keys, ns",
            "mproc_dict_set",
            "`Manager().dict()`",
            "mp_dict_set",
            Rule::Info,
        ),
        row(
            "Python `mproc.Dict` `d[k]`, 1000 int keys, ns",
            "mproc_dict_get",
            "UltraDict (`shared_lock=True`)",
            "ultra_dict_get",
            Rule::Info,
        ),
        row(
            "Python `mproc.Dict` `d[k] = v`, 1000 int keys, ns",
            "mproc_dict_set",
            "UltraDict (`shared_lock=True`)",
            "ultra_dict_set",
            Rule::Info,
        ),
        row(
            "Python `mproc.Lock` acquire + release, ns",
            "mproc_lock",
            "`multiprocessing.Lock`",
            "mp_lock",
            Rule::FasterBy(2.0),
        ),
        row(
            "Python `mproc.Value` `+= 1` under `get_lock()`, ns",
            "mproc_value_incr",
            "`multiprocessing.Value`",
            "mp_value_incr",
            Rule::FasterBy(10.0),
        ),
        row(
            "Python `numpy.frombuffer(mproc.Array).sum()`, 10 M `f64`, ms",
            "mproc_numpy_sum",
            "numpy `sum` of a local array",
            "local_numpy_sum",
            Rule::FasterBy(0.95),
        ),
    ]
}
