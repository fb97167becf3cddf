//! `mproc top` end to end: rates of a busy queue and lock, and the terminal view (redraw,
//! sort, quit on `q`).

use std::process::Command;
use std::time::Duration;

use mproc_testkit::{unique_name, with_deadline};

mod common;
use common::*;

#[test]
fn top_reports_rates_of_a_busy_queue_and_lock() {
    with_deadline(Duration::from_secs(60), || {
        use std::sync::atomic::{AtomicBool, Ordering};
        let prefix = unique_name("cli-top");
        let qname = format!("{prefix}-q");
        let lname = format!("{prefix}-l");
        let idle = format!("{prefix}-idle");
        let q: mproc_queue::PodQueue<u64> = mproc_queue::PodQueue::create(&qname, 64).unwrap();
        let quiet: mproc_queue::PodQueue<u64> = mproc_queue::PodQueue::create(&idle, 8).unwrap();
        quiet.put(7).unwrap();
        let lock = mproc_sync::Lock::create(&lname).unwrap();
        let stop = AtomicBool::new(false);
        let out = std::thread::scope(|s| {
            // Busy until `top` has printed both reports.
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    q.put(1).unwrap();
                    q.get().unwrap();
                    drop(lock.lock().unwrap());
                }
            });
            let out = mproc(&[
                "top",
                "--prefix",
                &prefix,
                "--interval-ms",
                "200",
                "--count",
                "2",
            ]);
            stop.store(true, Ordering::Relaxed);
            out
        });
        let reports: Vec<&str> = out.split("\n\n").filter(|r| !r.is_empty()).collect();
        assert_eq!(reports.len(), 2, "{out}");
        for r in reports {
            let field = |name: &str, col: usize| -> String {
                line_of(r, name)
                    .unwrap_or_else(|| panic!("{name} missing: {r}"))
                    .split_whitespace()
                    .nth(col)
                    .unwrap()
                    .to_owned()
            };
            // NAME KIND LEN/CAP PUT/S GET/S ...
            let busy_put: f64 = field(&qname, 3).parse().unwrap();
            let busy_get: f64 = field(&qname, 4).parse().unwrap();
            assert!(busy_put > 0.0 && busy_get > 0.0, "{r}");
            assert_eq!(field(&idle, 2), "1/8", "{r}");
            assert_eq!(field(&idle, 3), "0", "{r}");
            // Counted from the end: ACQUIRE/S, WAITS, DEAD.
            let acq: f64 = line_of(r, &lname)
                .unwrap()
                .split_whitespace()
                .nth_back(2)
                .unwrap()
                .parse()
                .unwrap();
            assert!(acq > 0.0, "{r}");
        }
    });
}

/// Waits until the captured screen output contains `needle`.
fn screen_shows(screen: &std::sync::Mutex<Vec<u8>>, needle: &str, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if String::from_utf8_lossy(&screen.lock().unwrap()).contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn top_on_a_terminal_redraws_sorts_and_quits_on_q() {
    with_deadline(Duration::from_secs(60), || {
        use std::io::{Read, Write};
        use std::process::Stdio;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};

        let prefix = unique_name("cli-tty");
        let qname = format!("{prefix}-q");
        let q: mproc_queue::PodQueue<u64> = mproc_queue::PodQueue::create(&qname, 64).unwrap();
        // A pseudo-terminal of 30 rows by 160 columns (what openpty(3) does).
        use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave = rustix::fs::open(
            ptsname(&master, Vec::new()).unwrap().as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let size = rustix::termios::Winsize {
            ws_row: 30,
            ws_col: 160,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&slave, size).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mproc"))
            .args(["top", "--prefix", &prefix, "--interval-ms", "100"])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let mut master = std::fs::File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        {
            // Reads until the terminal closes (EIO once the program exits).
            let mut master = master.try_clone().unwrap();
            let screen = Arc::clone(&screen);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = master.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    q.put(1).unwrap();
                    q.get().unwrap();
                }
            });
            assert!(
                screen_shows(&screen, &qname, Duration::from_secs(20)),
                "queue never shown"
            );
            assert!(screen_shows(
                &screen,
                "sorted by name",
                Duration::from_secs(5)
            ));
            master.write_all(b"s").unwrap();
            assert!(
                screen_shows(&screen, "sorted by put/s", Duration::from_secs(10)),
                "s did not change the sort"
            );
            master.write_all(b"q").unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(st) = child.try_wait().unwrap() {
                    break st;
                }
                if std::time::Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("q did not quit");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            stop.store(true, Ordering::Relaxed);
            assert!(status.success(), "{status:?}");
        });
        // It left the alternate screen: the user's terminal is as it was.
        assert!(screen_shows(&screen, "\x1b[?1049l", Duration::from_secs(5)));
    });
}
