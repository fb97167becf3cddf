//! The `mproc` binary end to end: a segment whose creator was SIGKILLed is listed as dead,
//! inspected, left alone by a dry-run `gc` and removed by `gc --yes`; live segments are never
//! touched.

use std::process::Command;
use std::time::Duration;

use mproc_segment::{Kind, Segment, SegmentOptions};
use mproc_testkit::{fork_child, unique_name, with_deadline};

fn mproc(args: &[&str]) -> String {
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

fn line_of<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    out.lines().find(|l| l.starts_with(name))
}

#[test]
fn gc_removes_only_segments_of_dead_creators() {
    with_deadline(Duration::from_secs(60), || {
        let prefix = unique_name("cli");
        let orphan = format!("{prefix}-orphan");
        let live = format!("{prefix}-live");
        let _live = Segment::create_for::<u64>(&live, Kind::ARRAY, 16).unwrap();

        // A child creates a queue-kind segment, keeps it past its own death, and is killed.
        let (r, w) = nix::unistd::pipe().unwrap();
        let orphan_c = orphan.clone();
        let mut child = fork_child(move || {
            let mut seg = SegmentOptions::new(Kind::ARRAY)
                .element::<u32>()
                .capacity(100)
                .create(&orphan_c)
                .unwrap();
            seg.persist();
            nix::unistd::write(&w, b"x").unwrap();
            std::thread::sleep(Duration::from_secs(60));
            0
        });
        let mut buf = [0u8; 1];
        nix::unistd::read(&r, &mut buf).unwrap();
        child.signal(nix::sys::signal::Signal::SIGKILL);
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
        let fd = nix::sys::mman::shm_open(
            format!("/{foreign}").as_str(),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
            .args(["inspect", &foreign])
            .output()
            .unwrap();
        let _ = nix::sys::mman::shm_unlink(format!("/{foreign}").as_str());
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(&foreign));
    });
}
