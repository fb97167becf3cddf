//! Helpers shared by the `mproc` command's tests.
#![allow(dead_code)] // each test file uses some of them

use std::process::Command;

/// Runs `mproc` with `args`; its stdout (it must succeed).
pub fn mproc(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
        .args(args)
        .output()
        .expect("run mproc");
    assert!(
        out.status.success(),
        "mproc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

pub fn line_of<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(name))
}
