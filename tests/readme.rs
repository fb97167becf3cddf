//! What a new user sees: the README's Quick start, run as printed, prints nothing on stdout or
//! stderr (no warning) and succeeds; and `examples/quick_start.rs` is the README's snippet.
//! (CI also runs the example binary itself.)

use std::time::Duration;

use mproc_testkit::with_deadline;

/// An example binary: `cargo test` builds every example before it runs the tests (CI runs
/// `cargo test --workspace`), into `target/<profile>/examples`.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir.join("examples").join(name)
}

/// The first ```` ```lang ```` block after `heading` in the README.
fn readme_block(heading: &str, lang: &str) -> &'static str {
    let readme = include_str!("../README.md");
    let start = readme.find(heading).expect("the README section");
    let fence = format!("```{lang}\n");
    let code = &readme[start..];
    let code = &code[code.find(&fence).expect("a code block") + fence.len()..];
    &code[..code.find("```").expect("the block ends")]
}

/// Runs an example binary with `args` and returns (stdout, stderr), asserting success.
fn run_example(name: &str, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let out = std::process::Command::new(example(name))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run examples/{name} (built by `cargo test`): {e}"));
    assert!(out.status.success(), "{out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_quick_start_is_the_readme_snippet() {
    let code = readme_block("## Quick start", "rust");
    let example = include_str!("../examples/quick_start.rs");
    assert!(
        example.ends_with(code),
        "examples/quick_start.rs differs from the README's Quick start"
    );
}

/// Runs the Quick start as a program and reads what it prints: nothing, on stdout or stderr.
#[test]
fn the_quick_start_runs_silently() {
    with_deadline(Duration::from_secs(120), || {
        let (said, err) = run_example("quick_start", &[], &[]);
        assert_eq!(err, "", "the Quick start wrote to stderr");
        assert_eq!(said, "");
    });
}

/// The README's Python lines, run as printed against a Rust `Array` (under a unique name):
/// they double element 0 and print nothing — no `BufferError` at exit.
#[test]
fn the_readme_python_lines_run_silently() {
    with_deadline(Duration::from_secs(60), || {
        let code = readme_block("**Python side, by name**", "python");
        let name = mproc_testkit::unique_name("readme-grid");
        let grid = mproc::array::Array::<f64>::create(&name, 1_000_000).unwrap();
        grid.set(0, 21.0).unwrap();
        let script = code.replace("name=\"grid\"", &format!("name={name:?}"));
        assert_ne!(script, code, "the snippet opens \"grid\"");
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .expect("python3");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "python wrote to stderr"
        );
        assert_eq!(grid.get(0).unwrap(), 42.0);
    });
}

/// `join_and_wait` (one of its processes panics on purpose): the panic is reported as the
/// child's (`thread 'mproc child' panicked`), not under the name of an mproc thread of the
/// parent, and the parent reports it as the child's error.
#[test]
fn a_childs_panic_is_reported_as_the_childs() {
    with_deadline(Duration::from_secs(120), || {
        let (said, err) = run_example("join_and_wait", &[], &[("RUST_BACKTRACE", "0")]);
        assert!(err.contains("thread 'mproc child'"), "{err}");
        assert!(!err.contains("mproc-forker"), "{err}");
        assert!(said.contains("child process panicked"), "{said}");
    });
}

/// The main example (`cargo run --release --example worker_pool`, here the test build with a
/// smaller limit): the pool's answer agrees with one process's, every line it prints is
/// there, and nothing goes to stderr.
#[test]
fn the_main_example_agrees_and_prints_nothing_to_stderr() {
    with_deadline(Duration::from_secs(120), || {
        let (said, err) = run_example("worker_pool", &["1000000"], &[]);
        assert_eq!(err, "", "stderr");
        // 78498 primes below one million.
        assert!(said.contains("one process:        78498 primes"), "{said}");
        assert!(said.contains("answers agree: 78498"), "{said}");
        assert!(said.contains("speed-up:"), "{said}");
    });
}

/// `examples/cluster_pool.rs` (the README's "Beyond one machine"): two worker processes
/// standing for hosts count the primes through a redis-server the example starts itself;
/// both take chunks, the answer agrees, nothing goes to stderr.
#[test]
fn the_cluster_example_agrees_across_worker_hosts_and_prints_nothing_to_stderr() {
    with_deadline(Duration::from_secs(120), || {
        let (said, err) = run_example("cluster_pool", &["2000000"], &[]);
        assert_eq!(err, "", "stderr");
        // 148933 primes below two million, in 8 chunks.
        assert!(said.contains("one process:        148933 primes"), "{said}");
        assert!(said.contains("answers agree: 148933"), "{said}");
        let hosts = said.lines().filter(|l| l.contains("host (pid")).count();
        assert!((1..=2).contains(&hosts), "{said}");
    });
}
