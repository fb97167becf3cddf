//! `cargo xtask test [ARGS]`: the README's test command.
//!
//! It makes sure what the suites need is on the machine, installing what is missing, and then
//! runs every suite (`cargo test --workspace ARGS`, then the suites behind optional features:
//! TLS, the progress bar). The suites start and stop their own services (a `redis-server` per
//! test, on a free port of 127.0.0.1).
//!
//! Needed, and installed when missing:
//! - `redis-server` (Debian's package, with `apt-get`; as root, or through `sudo`). A
//!   different binary can be named with `MPROC_REDIS_SERVER`.
//! - For the Python package's suite (`python/tests`, pytest): a virtual environment in
//!   `target/py-venv` (made with the machine's `python3`, or `MPROC_PYTHON`) holding maturin,
//!   pytest, pytest-timeout, numpy and mypy from PyPI; the package is built into it with
//!   `maturin develop --release`, and the Rust peer of the interop tests with cargo.

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match test(&args[1..]) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        Some("deps") => match ensure_redis() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!(
                "usage: cargo xtask test [ARGS]   install what the suites need, then run \
                 `cargo test --workspace ARGS`\n       cargo xtask deps          only install"
            );
            ExitCode::from(2)
        }
    }
}

/// Suites behind optional features, run after the workspace's (they build the crate again
/// with the feature on).
const FEATURE_SUITES: &[&[&str]] = &[
    // rediss:// against a TLS-only redis-server, with a CA made by the test.
    &["-p", "mproc-redis", "--features", "tls", "--test", "tls"],
    // The indicatif bar during Pool::map and RemotePool::map.
    &[
        "-p",
        "mproc-pool",
        "--features",
        "progress",
        "--test",
        "pool",
        "progress",
    ],
    &[
        "-p",
        "mproc-redis",
        "--features",
        "progress",
        "--test",
        "pool",
        "progress",
    ],
];

fn test(extra: &[String]) -> Result<ExitCode, String> {
    ensure_redis()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |args: &[&str], extra: &[String]| {
        Command::new(&cargo)
            .arg("test")
            .args(args)
            .args(extra)
            .status()
            .map_err(|e| format!("could not run cargo: {e}"))
            .map(|s| s.success())
    };
    if !run(&["--workspace"], extra)? {
        return Ok(ExitCode::FAILURE);
    }
    // Extra arguments (a test name filter, say) apply to the workspace run only.
    for suite in FEATURE_SUITES {
        if !extra.is_empty() {
            break;
        }
        eprintln!("xtask: cargo test {}", suite.join(" "));
        if !run(suite, &[])? {
            return Ok(ExitCode::FAILURE);
        }
    }
    if extra.is_empty() && !python_suite(&cargo)? {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// What the Python suite installs into its virtual environment.
const PY_TEST_DEPS: &[&str] = &[
    "maturin>=1.5,<2",
    "pytest",
    "pytest-timeout",
    "numpy",
    "mypy",
];

/// The workspace's root (xtask lives in `crates/xtask`).
fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| ".".into())
}

/// Builds the Python package into `target/py-venv` and runs its pytest suite.
fn python_suite(cargo: &str) -> Result<bool, String> {
    let root = root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let venv = root.join("target/py-venv");
    let py = venv.join("bin/python");
    let status = |cmd: &mut Command, what: &str| -> Result<bool, String> {
        cmd.status()
            .map(|s| s.success())
            .map_err(|e| format!("could not run {what}: {e}"))
    };
    if !py.exists() {
        let python = std::env::var("MPROC_PYTHON").unwrap_or_else(|_| "python3".into());
        eprintln!(
            "xtask: making the Python test environment in {}",
            venv.display()
        );
        let made = status(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            &python,
        )?;
        if !made {
            // Debian's python3 keeps venv in a package of its own.
            apt_install(&["python3-venv"])?;
            if !status(
                Command::new(&python).args(["-m", "venv"]).arg(&venv),
                &python,
            )? {
                return Err(format!("{python} -m venv failed"));
            }
        }
    }
    let ready = Command::new(&py)
        .args(["-c", "import pytest, pytest_timeout, numpy, maturin, mypy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        eprintln!("xtask: installing {} from PyPI", PY_TEST_DEPS.join(", "));
        let mut pip = Command::new(&py);
        pip.args(["-m", "pip", "install", "-q"]).args(PY_TEST_DEPS);
        if !status(&mut pip, "pip")? {
            return Err("pip could not install the Python test tools".into());
        }
    }
    eprintln!("xtask: maturin develop --release (the mproc Python package)");
    let mut develop = Command::new(venv.join("bin/maturin"));
    develop
        .args(["develop", "--release", "-q"])
        .current_dir(root.join("python"))
        .env("VIRTUAL_ENV", &venv)
        .env("CARGO_TARGET_DIR", &target);
    if !status(&mut develop, "maturin")? {
        return Ok(false);
    }
    let mut peer = Command::new(cargo);
    peer.args([
        "build",
        "--release",
        "-q",
        "-p",
        "mproc-python",
        "--example",
        "peer",
    ]);
    if !status(&mut peer, "cargo build")? {
        return Ok(false);
    }
    eprintln!("xtask: pytest python/tests");
    let mut pytest = Command::new(&py);
    pytest
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "python/tests",
        ])
        .current_dir(&root)
        .env("MPROC_PEER", target.join("release/examples/peer"));
    status(&mut pytest, "pytest")
}

/// Whether `cmd --version` runs.
fn runs(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ensure_redis() -> Result<(), String> {
    let server = std::env::var("MPROC_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    if runs(&server) {
        return Ok(());
    }
    eprintln!("xtask: {server} is missing: installing Debian's redis-server package");
    apt_install(&["redis-server"])?;
    if runs(&server) {
        Ok(())
    } else {
        Err(format!(
            "{server} still does not run after installing redis-server"
        ))
    }
}

/// `apt-get install -y PKGS`, as root or through sudo; `apt-get update` first if the
/// package lists are stale.
fn apt_install(pkgs: &[&str]) -> Result<(), String> {
    let root = is_root();
    let run = |args: &[&str]| -> bool {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(pkgs);
    if run(&install) {
        return Ok(());
    }
    if run(&["update"]) && run(&install) {
        return Ok(());
    }
    Err(format!(
        "could not install {} with apt-get (run as root, or with sudo)",
        pkgs.join(" ")
    ))
}

/// Whether this process runs as root (from `/proc/self/status`, so xtask needs no crates).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
