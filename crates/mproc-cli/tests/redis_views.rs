//! `mproc ls|metrics|top --redis URL` against a real redis-server holding queues made by
//! `mproc-redis`.

use std::process::Command;
use std::time::Duration;

use mproc_redis::Redis;
use mproc_testkit::{RedisServer, with_deadline};

fn mproc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mproc"))
        .args(args)
        .output()
        .expect("run mproc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ls_metrics_and_top_show_redis_queues_with_depth_and_rates() {
    with_deadline(Duration::from_secs(60), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let jobs = r.queue("jobs").capacity(100).create::<u64>().unwrap();
        let done = r.queue("done").create_joinable::<String>().unwrap();
        jobs.put_many((0..10).collect()).unwrap();
        assert_eq!(jobs.get().unwrap(), 0); // one leased
        done.close().unwrap();
        let url = s.url();

        let (ok, out, err) = mproc(&["ls", "--redis", &url]);
        assert!(ok, "{err}");
        let line = out.lines().find(|l| l.starts_with("jobs ")).expect(&out);
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            ["jobs", "queue", "u64", "100", "9", "1", "no"],
            "{out}"
        );
        let line = out.lines().find(|l| l.starts_with("done ")).expect(&out);
        assert!(
            line.contains("joinable") && line.trim_end().ends_with("yes"),
            "{line}"
        );

        let (ok, out, _) = mproc(&["ls", "--redis", &url, "--json", "--prefix", "jo"]);
        assert!(ok);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["waiting"], 9);
        assert_eq!(v[0]["added"], 10);

        let (ok, out, _) = mproc(&["metrics", "--redis", &url]);
        assert!(ok);
        assert!(
            out.contains("mproc_redis_queue_waiting{queue=\"jobs\"} 9"),
            "{out}"
        );
        assert!(
            out.contains("mproc_redis_queue_added_total{queue=\"jobs\"} 10"),
            "{out}"
        );

        let (ok, out, _) = mproc(&[
            "top",
            "--redis",
            &url,
            "--count",
            "1",
            "--interval-ms",
            "50",
        ]);
        assert!(ok);
        assert!(out.lines().any(|l| l.starts_with("jobs ")), "{out}");

        let (ok, _, err) = mproc(&["ls", "--redis", "redis://127.0.0.1:1/"]);
        assert!(!ok && err.starts_with("mproc: "), "{err}");
    });
}
