//! The `mproc` binary end to end: a segment whose creator was SIGKILLed is listed as dead,
//! inspected, left alone by a dry-run `gc` and removed by `gc --yes`; live segments are never
//! touched.

use std::process::Command;
use std::time::Duration;

use mproc_segment::{Kind, Segment, SegmentOptions};
use mproc_testkit::{fork_child, unique_name, with_deadline};

mod common;
use common::*;

#[test]
fn gc_removes_only_segments_of_dead_creators() {
    with_deadline(Duration::from_secs(60), || {
        let prefix = unique_name("cli");
        let orphan = format!("{prefix}-orphan");
        let live = format!("{prefix}-live");
        let _live = Segment::create_for::<u64>(&live, Kind::ARRAY, 16).unwrap();

        // A child creates a queue-kind segment, keeps it past its own death, and is killed.
        let (r, w) = rustix::pipe::pipe().unwrap();
        let orphan_c = orphan.clone();
        let mut child = fork_child(move || {
            let mut seg = SegmentOptions::new(Kind::ARRAY)
                .element::<u32>()
                .capacity(100)
                .create(&orphan_c)
                .unwrap();
            seg.persist();
            rustix::io::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        let mut buf = [0u8; 1];
        rustix::io::read(&r, &mut buf).unwrap();
        child.signal(rustix::process::Signal::KILL);
        child.wait();

        let ls = mproc(&["ls", "--prefix", &prefix]);
        let orphan_line = line_of(&ls, &orphan).expect("orphan listed");
        assert!(
            orphan_line.contains("array") && orphan_line.contains("u32"),
            "{orphan_line}"
        );
        assert!(orphan_line.contains("100"), "{orphan_line}");
        assert!(orphan_line.trim_end().ends_with("no"), "{orphan_line}");
        let live_line = line_of(&ls, &live).expect("live listed");
        assert!(live_line.trim_end().ends_with("yes"), "{live_line}");

        let inspect = mproc(&["inspect", &orphan]);
        assert!(inspect.contains("dead"), "{inspect}");
        assert!(inspect.contains("u32"), "{inspect}");

        let dry = mproc(&["gc", "--prefix", &prefix]);
        assert!(dry.contains(&format!("would remove {orphan}")), "{dry}");
        assert!(!dry.contains(&live), "{dry}");
        assert!(Segment::open_raw(&orphan).is_ok(), "dry run removed it");

        let wet = mproc(&["gc", "--prefix", &prefix, "--yes"]);
        assert!(wet.contains(&format!("removed {orphan}")), "{wet}");
        assert!(Segment::open_raw(&orphan).is_err(), "gc --yes left it");
        assert!(
            Segment::open_raw(&live).is_ok(),
            "gc removed a live segment"
        );
    });
}

#[test]
fn inspect_shows_a_queue_state_and_rejects_foreign_segments() {
    with_deadline(Duration::from_secs(60), || {
        let name = unique_name("cli-queue");
        let q: mproc_queue::PodQueue<u64> = mproc_queue::PodQueue::create(&name, 8).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        q.close();
        let out = mproc(&["inspect", &name]);
        assert!(out.contains("2 of 8 slots used"), "{out}");
        assert!(out.contains("closed"), "{out}");

        // A shared-memory object made by someone else: a clear error, exit status 1.
        let foreign = unique_name("cli-foreign");
        let fd = rustix::shm::open(
            format!("/{foreign}").as_str(),
            rustix::shm::OFlags::CREATE | rustix::shm::OFlags::RDWR,
            rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
        )
        .unwrap();
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
            .args(["inspect", &foreign])
            .output()
            .unwrap();
        let _ = rustix::shm::unlink(format!("/{foreign}").as_str());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(&foreign));
    });
}

/// Removes planted files however the test ends.
struct Planted(Vec<String>);

impl Drop for Planted {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[test]
fn planted_files_cannot_crash_or_block_ls_inspect_or_gc() {
    with_deadline(Duration::from_secs(60), || {
        let prefix = unique_name("cli-planted");
        let path = |s: &str| format!("/dev/shm/{prefix}-{s}");
        let planted = Planted(
            ["trunc", "huge", "fifo", "link", "zero", "nobody"]
                .iter()
                .map(|s| path(s))
                .collect(),
        );
        // A real segment's header, cut short after the header: mapping its payload would fault.
        let real = format!("{prefix}-real");
        let seg = SegmentOptions::new(Kind::QUEUE)
            .payload_len(1 << 20)
            .create(&real)
            .unwrap();
        let bytes = std::fs::read(format!("/dev/shm/{real}")).unwrap();
        drop(seg);
        std::fs::write(path("trunc"), &bytes[..300]).unwrap();
        // A header that claims a payload far beyond the file.
        let mut huge = bytes[..4096].to_vec();
        huge[40..48].copy_from_slice(&(1u64 << 40).to_ne_bytes());
        std::fs::write(path("huge"), &huge).unwrap();
        // A FIFO (opening it for reading would block), a symlink, a zero-filled file.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path("fifo").as_str(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::RUSR,
            0,
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/passwd", path("link")).unwrap();
        std::fs::write(path("zero"), vec![0u8; 8192]).unwrap();
        // A whole valid-looking segment file owned by another user.
        std::fs::write(path("nobody"), &bytes).unwrap();
        let is_root = rustix::process::geteuid().is_root();
        if is_root {
            std::os::unix::fs::chown(path("nobody"), Some(65534), None).unwrap();
        }

        let ls = mproc(&["ls", "--all", "--prefix", &prefix]);
        assert!(
            line_of(&ls, &format!("{prefix}-trunc")).is_some_and(|l| l.contains("damaged")),
            "{ls}"
        );
        assert!(
            line_of(&ls, &format!("{prefix}-huge")).is_some_and(|l| l.contains("damaged")),
            "{ls}"
        );
        assert!(
            line_of(&ls, &format!("{prefix}-fifo")).is_some_and(|l| l.contains("not a regular")),
            "{ls}"
        );
        assert!(
            line_of(&ls, &format!("{prefix}-link")).is_some_and(|l| l.contains("not a regular")),
            "{ls}"
        );
        assert!(
            line_of(&ls, &format!("{prefix}-zero")).is_some_and(|l| l.contains("not an mproc")),
            "{ls}"
        );

        for bad in ["trunc", "huge", "fifo", "link", "zero"] {
            let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
                .args(["inspect", &format!("{prefix}-{bad}")])
                .output()
                .unwrap();
            assert!(!out.status.success(), "inspect {bad} should fail cleanly");
            assert!(
                out.status.code().is_some(),
                "inspect {bad} died of a signal"
            );
        }

        // gc never removes another user's file, nor anything it cannot read as a segment.
        let wet = mproc(&["gc", "--prefix", &prefix, "--yes"]);
        if is_root {
            assert!(!wet.contains(&format!("{prefix}-nobody")), "{wet}");
            assert!(std::fs::symlink_metadata(path("nobody")).is_ok());
        }
        for keep in ["fifo", "link", "zero", "trunc", "huge"] {
            assert!(
                std::fs::symlink_metadata(path(keep)).is_ok(),
                "gc removed {keep}: {wet}"
            );
        }
        drop(planted);
    });
}

/// Checks one line of the Prometheus text exposition format strictly: a `# HELP` / `# TYPE`
/// comment, or `name{label="value",...} number`.
fn is_exposition_line(l: &str) -> bool {
    if let Some(rest) = l
        .strip_prefix("# HELP ")
        .or_else(|| l.strip_prefix("# TYPE "))
    {
        return rest.split(' ').next().is_some_and(|n| !n.is_empty());
    }
    let Some((series, value)) = l.rsplit_once(' ') else {
        return false;
    };
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let series_ok = match series.split_once('{') {
        None => name_ok(series),
        Some((name, labels)) => {
            name_ok(name)
                && labels.ends_with('}')
                && labels[..labels.len() - 1]
                    .split("\",")
                    .all(|pair| pair.split_once("=\"").is_some_and(|(k, _)| name_ok(k)))
        }
    };
    series_ok && value.parse::<f64>().is_ok()
}

#[test]
fn json_and_metrics_describe_a_queue_and_a_held_lock() {
    with_deadline(Duration::from_secs(60), || {
        let prefix = unique_name("cli-json");
        let qname = format!("{prefix}-q");
        let lname = format!("{prefix}-l");
        let q: mproc_queue::Queue<u32> = mproc_queue::Queue::create(&qname, 8).unwrap();
        q.put(1).unwrap();
        q.put(2).unwrap();
        let lock = mproc_sync::Lock::create(&lname).unwrap();
        let _held = lock.lock().unwrap();

        let ls: serde_json::Value =
            serde_json::from_str(&mproc(&["ls", "--json", "--prefix", &prefix])).unwrap();
        let entries = ls.as_array().unwrap();
        let qe = entries
            .iter()
            .find(|e| e["name"] == qname.as_str())
            .unwrap();
        assert_eq!(qe["status"], "mproc");
        assert_eq!(qe["kind"], "queue");
        assert_eq!(qe["queue"]["length"], 2);
        assert_eq!(qe["queue"]["capacity"], 8);
        assert_eq!(qe["creator_alive"], true);
        let le = entries
            .iter()
            .find(|e| e["name"] == lname.as_str())
            .unwrap();
        assert_eq!(le["lock_holder"], mproc_segment::liveness::me());
        assert_eq!(le["lock"]["acquisitions"], 1);
        assert_eq!(qe["queue"]["put_total"], 2);

        let one: serde_json::Value =
            serde_json::from_str(&mproc(&["inspect", "--json", &qname])).unwrap();
        assert_eq!(one["queue"]["length"], 2);
        assert!(one["mapped_by"].is_array());
        // Round trip through serde_json unchanged.
        let again: serde_json::Value = serde_json::from_str(&one.to_string()).unwrap();
        assert_eq!(again, one);

        let metrics = mproc(&["metrics", "--prefix", &prefix]);
        for l in metrics.lines() {
            assert!(is_exposition_line(l), "not exposition format: {l:?}");
        }
        assert!(
            metrics.contains(&format!("mproc_queue_length{{name=\"{qname}\"}} 2")),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!("mproc_lock_held{{name=\"{lname}\"}} 1")),
            "{metrics}"
        );
        assert!(
            metrics.contains("# TYPE mproc_queue_length gauge"),
            "{metrics}"
        );
        // Counters: two puts, nothing taken yet; one acquisition of the lock.
        for (series, value) in [
            (format!("mproc_queue_put_total{{name=\"{qname}\"}}"), 2),
            (format!("mproc_queue_got_total{{name=\"{qname}\"}}"), 0),
            (
                format!("mproc_queue_blocked_consumers{{name=\"{qname}\"}}"),
                0,
            ),
            (
                format!("mproc_lock_acquisitions_total{{name=\"{lname}\"}}"),
                1,
            ),
            (
                format!("mproc_lock_owner_deaths_total{{name=\"{lname}\"}}"),
                0,
            ),
        ] {
            assert!(
                metrics.contains(&format!("{series} {value}\n")),
                "{series} {value} missing: {metrics}"
            );
        }
        assert!(
            metrics.contains("# TYPE mproc_queue_put_total counter"),
            "{metrics}"
        );
        q.get().unwrap();
        let after = mproc(&["metrics", "--prefix", &prefix]);
        assert!(
            after.contains(&format!("mproc_queue_got_total{{name=\"{qname}\"}} 1\n")),
            "{after}"
        );
    });
}

/// `mproc ls --json`'s entry for `name`, once `ready` holds for it (the board is refreshed
/// by the pool's handler thread).
fn json_entry_when(
    prefix: &str,
    name: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ls: serde_json::Value =
            serde_json::from_str(&mproc(&["ls", "--json", "--prefix", prefix])).unwrap();
        let e = ls
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_default();
        if ready(&e) {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {e:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_named_pool_publishes_workers_tasks_failures_and_restarts() {
    with_deadline(Duration::from_secs(90), || {
        use mproc_pool::{Pool, PoolError, TaskError, ThreadedFork};
        let name = unique_name("cli-pool");
        let p = Pool::builder()
            .processes(2)
            .threaded_fork(ThreadedFork::Allow)
            .name(&name)
            .build()
            .unwrap();
        let squares = p.map(|x: u64| x * x, 0..40).unwrap();
        assert_eq!(squares[39], 1521);
        let r = p.apply(|code: i32| -> u32 { std::process::exit(code) }, 3);
        assert!(
            matches!(r, Err(PoolError::Task(TaskError::WorkerDied { .. }))),
            "{r:?}"
        );
        assert_eq!(p.apply(|x: u32| x + 1, 1).unwrap(), 2);

        let mut pids = p.pids();
        pids.sort();
        let e = json_entry_when(&name, &name, |e| {
            let pool = &e["pool"];
            let mut shown: Vec<u64> = pool["workers"]
                .as_array()
                .map(|w| w.iter().filter_map(|w| w["pid"].as_u64()).collect())
                .unwrap_or_default();
            shown.sort();
            pool["restarts"]["died"] == 1
                && shown == pids.iter().map(|&p| u64::from(p)).collect::<Vec<_>>()
                && pool["workers"]
                    .as_array()
                    .is_some_and(|w| w.iter().all(|w| w["state"] == "idle"))
        });
        assert_eq!(e["kind"], "pool");
        let pool = &e["pool"];
        assert_eq!(pool["failures"]["worker_died"], 1, "{pool:#}");
        assert_eq!(pool["failures"]["timed_out"], 0, "{pool:#}");
        // Every chunk of the map and the last apply: at least 2, and no failed one counted.
        let done = pool["tasks_done"].as_u64().unwrap();
        assert!((2..=41).contains(&done), "{pool:#}");

        let metrics = mproc(&["metrics", "--prefix", &name]);
        for l in metrics.lines() {
            assert!(is_exposition_line(l), "not exposition format: {l:?}");
        }
        for series in [
            format!("mproc_pool_workers{{name=\"{name}\"}} 2\n"),
            format!("mproc_pool_restarts_total{{name=\"{name}\",cause=\"died\"}} 1\n"),
            format!("mproc_pool_failures_total{{name=\"{name}\",kind=\"worker_died\"}} 1\n"),
            format!("mproc_pool_tasks_done_total{{name=\"{name}\"}} {done}\n"),
        ] {
            assert!(metrics.contains(&series), "{series} missing: {metrics}");
        }
        let top = mproc(&[
            "top",
            "--prefix",
            &name,
            "--interval-ms",
            "50",
            "--count",
            "1",
        ]);
        let row = line_of(&top, &name).unwrap_or_else(|| panic!("{top}"));
        assert!(row.contains("pool") && row.contains("0/2"), "{row}");
        // Below the pool's row, a row a worker: its slot, pid and state.
        let lines: Vec<&str> = top.lines().collect();
        let at = lines.iter().position(|l| l.starts_with(&name)).unwrap();
        for (k, pid) in p.pids().iter().enumerate() {
            let w = lines[at + 1 + k];
            assert!(
                w.starts_with(&format!("  worker {k} (pid {pid})")) && w.contains("idle"),
                "{top}"
            );
        }

        // A job that waits for an event: its worker's row says which job it runs.
        let release_name = unique_name("cli-pool-go");
        let release = mproc_sync::Event::create(&release_name).unwrap();
        let held = p
            .apply_async(
                |n: String| mproc_sync::Event::open(&n).map(|e| e.wait()).is_ok(),
                release_name.clone(),
            )
            .unwrap();
        json_entry_when(&name, &name, |e| {
            e["pool"]["workers"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w["state"] == "running"))
        });
        let top = mproc(&[
            "top",
            "--prefix",
            &name,
            "--interval-ms",
            "50",
            "--count",
            "1",
        ]);
        let running: Vec<&str> = top.lines().filter(|l| l.contains("running")).collect();
        assert!(
            running.len() == 1
                && running[0].starts_with("  worker ")
                && running[0].contains("job "),
            "{top}"
        );
        release.set();
        assert!(held.get().unwrap());
        drop(release);

        drop(p);
        assert!(
            !std::path::Path::new(&format!("/dev/shm/{name}")).exists(),
            "the board outlived its pool"
        );
    });
}

/// A queue and a lock copied into files another user owns, with every counter at `u64::MAX`
/// and names and type names full of terminal escapes (ESC, BEL, CR, newlines): `ls`,
/// `inspect`, `top` and `gc` neither panic (saturating arithmetic) nor let a byte of those
/// escapes reach the terminal (a fake row, a cleared screen).
#[test]
fn scribbled_counters_and_escape_names_cannot_crash_or_spoof_the_text_output() {
    use std::os::unix::fs::PermissionsExt;
    with_deadline(Duration::from_secs(60), || {
        let prefix = unique_name("cli-esc");
        let q = mproc_queue::Queue::<u64>::create(&format!("{prefix}-q"), 8).unwrap();
        q.put(1).unwrap();
        let l = mproc_sync::Lock::create(&format!("{prefix}-l")).unwrap();
        drop(l.lock().unwrap());
        let evil = |tag: &str| format!("{prefix}-\x1b[2J\x07\rfake row\n{tag}");
        let mut planted = Vec::new();
        for (src, tag) in [(format!("{prefix}-q"), "q"), (format!("{prefix}-l"), "l")] {
            let mut bytes = std::fs::read(format!("/dev/shm/{src}")).unwrap();
            // The type name (header bytes 88..216) gets escapes too; its hash no longer
            // matches, so the header is reported damaged: both paths are printed.
            let dst = format!("/dev/shm/{}", evil(tag));
            let mut damaged = bytes.clone();
            damaged[88..92].copy_from_slice(b"\x1b[1m");
            std::fs::write(format!("{dst}-typename"), &damaged).unwrap();
            planted.push(format!("{dst}-typename"));
            // Every 8-byte word of the payload at u64::MAX: counters, lengths, lock words.
            for w in bytes[256..].chunks_exact_mut(8) {
                w.copy_from_slice(&u64::MAX.to_ne_bytes());
            }
            std::fs::write(&dst, &bytes).unwrap();
            planted.push(dst);
        }
        let _cleanup = Planted(planted.clone());
        for p in &planted {
            std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let runs = [
            vec!["ls", "--all", "--prefix", &prefix],
            vec![
                "top",
                "--prefix",
                &prefix,
                "--interval-ms",
                "50",
                "--count",
                "2",
            ],
            vec!["gc", "--prefix", &prefix],
            vec!["metrics", "--prefix", &prefix],
        ];
        for args in runs {
            let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
                .args(&args)
                .output()
                .unwrap();
            assert!(out.status.success(), "mproc {args:?}: {out:?}");
            for (what, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                assert!(
                    !text.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'),
                    "mproc {args:?} wrote a raw control byte to {what}: {:?}",
                    String::from_utf8_lossy(text)
                );
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.lines().any(|l| l.starts_with("fake row")),
                "mproc {args:?} let a name start a row: {stdout}"
            );
        }
        // inspect takes a name; a name with control bytes is refused, with the name escaped.
        let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
            .args(["inspect", &evil("q")])
            .output()
            .unwrap();
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.iter().any(|&b| b == 0x1b || b == 0x07 || b == b'\r'));
        }
        drop((q, l));
    });
}
