//! RemotePool and Worker: workers in other processes (standing for other hosts), a real
//! redis-server, tasks by name.

use std::collections::BTreeSet;
use std::time::Duration;

use mproc_pool::TaskError;
use mproc_redis::{Redis, RedisAtomic, RemoteError, RemotePool, Task, Worker};
use mproc_testkit::{Child, RedisServer, Signal, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(90);

fn square(x: u64) -> u64 {
    x * x
}
fn boom(x: u64) -> u64 {
    panic!("boom at {x}")
}
fn spin(ms: u64) -> u64 {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        std::hint::spin_loop();
    }
    ms
}
/// Counts its runs in the atomic "runs" (at the URL in the argument); the first run sets
/// the event "started" and hangs until its process is killed.
fn first_run_hangs(url: String) -> i64 {
    let r = Redis::connect(&url).unwrap();
    let runs = RedisAtomic::<i64>::open(&r, "runs").unwrap();
    let n = runs.fetch_add(1).unwrap();
    if n == 0 {
        r.event("started").unwrap().set().unwrap();
        loop {
            std::thread::park();
        }
    }
    n
}
/// The first run sets "started" and waits for "release"; later runs answer at once. Returns
/// which run it was.
fn first_run_waits(url: String) -> i64 {
    let r = Redis::connect(&url).unwrap();
    let n = RedisAtomic::<i64>::open(&r, "runs")
        .unwrap()
        .fetch_add(1)
        .unwrap()
        + 1;
    if n == 1 {
        r.event("started").unwrap().set().unwrap();
        r.event("release").unwrap().wait().unwrap();
    }
    n
}
/// Stores its pid in "pid", sets "started" and hangs until its process is killed.
fn hang_and_tell(url: String) -> i64 {
    let r = Redis::connect(&url).unwrap();
    let pid = i64::from(std::process::id());
    RedisAtomic::<i64>::open(&r, "pid")
        .unwrap()
        .store(pid)
        .unwrap();
    r.event("started").unwrap().set().unwrap();
    loop {
        std::thread::park();
    }
}
/// Counts its runs in "marks".
fn mark(url: String) -> i64 {
    let r = Redis::connect(&url).unwrap();
    RedisAtomic::<i64>::open(&r, "marks")
        .unwrap()
        .fetch_add(1)
        .unwrap()
        + 1
}

/// Waits for the event named in its argument (at the URL in its argument), then answers 0.
fn hold(args: (String, String)) -> i64 {
    let r = Redis::connect(&args.0).unwrap();
    r.event(&args.1).unwrap().wait().unwrap();
    0
}

const HOLD: Task<(String, String), i64> = Task::new("hold", hold);
const SQUARE: Task<u64, u64> = Task::new("square", square);
const BOOM: Task<u64, u64> = Task::new("boom", boom);
const SPIN: Task<u64, u64> = Task::new("spin", spin);
const HANGS: Task<String, i64> = Task::new("first_run_hangs", first_run_hangs);
const MARK: Task<String, i64> = Task::new("mark", mark);
const WAITS: Task<String, i64> = Task::new("first_run_waits", first_run_waits);
const HANG_AND_TELL: Task<String, i64> = Task::new("hang_and_tell", hang_and_tell);
const NOT_REGISTERED: Task<u64, u64> = Task::new("nobody_has_this", square);

fn worker(url: &str, pool: &str, key: Option<&'static str>) -> Child {
    worker_with(url, pool, key, 2, Duration::from_millis(500))
}

fn worker_with(
    url: &str,
    pool: &str,
    key: Option<&'static str>,
    processes: usize,
    lease: Duration,
) -> Child {
    let (url, pool) = (url.to_string(), pool.to_string());
    fork_child(move || {
        let mut b = Redis::builder(&url);
        if let Some(k) = key {
            b = b.authkey(k);
        }
        let r = b.connect().unwrap();
        Worker::new(&r, &pool)
            .processes(processes)
            .lease(lease)
            .register(&HOLD)
            .register(&SQUARE)
            .register(&BOOM)
            .register(&SPIN)
            .register(&HANGS)
            .register(&MARK)
            .register(&WAITS)
            .register(&HANG_AND_TELL)
            .run()
            .map(|_| 0)
            .unwrap_or(3)
    })
}

#[test]
fn map_imap_and_apply_run_on_remote_workers_with_errors_per_task() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let pool = RemotePool::connect(&r, "p")
            .unwrap()
            .chunksize(7)
            .task_timeout(Duration::from_secs(1));
        let workers = [worker(&s.url(), "p", None), worker(&s.url(), "p", None)];
        let args: Vec<u64> = (0..200).collect();
        let want: Vec<u64> = args.iter().map(|x| x * x).collect();
        assert_eq!(pool.map(&SQUARE, args.clone()).unwrap(), want);
        let ordered: Vec<u64> = pool
            .imap(&SQUARE, args.clone())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ordered, want);
        let unordered: BTreeSet<u64> = pool
            .imap_unordered(&SQUARE, args.clone())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(unordered, want.iter().copied().collect());
        assert_eq!(pool.apply_async(&SQUARE, 12).unwrap().get().unwrap(), 144);

        // A panic fails its own task, with the message, and nothing else.
        match pool.apply(&BOOM, 5) {
            Err(RemoteError::Task {
                error: TaskError::Panicked { message },
                ..
            }) => assert!(message.contains("boom at 5"), "{message}"),
            other => panic!("{other:?}"),
        }
        // Past its limit: Timeout, and the worker goes on.
        assert!(matches!(
            pool.apply(&SPIN, 5_000),
            Err(RemoteError::Task {
                error: TaskError::Timeout { limit_ms: 1000 },
                ..
            })
        ));
        assert_eq!(pool.apply(&SPIN, 1).unwrap(), 1);
        assert!(matches!(
            pool.apply(&NOT_REGISTERED, 1),
            Err(RemoteError::UnknownTask { .. })
        ));
        // The map's other results still come back when one fails.
        let mixed: Vec<_> = pool.imap(&BOOM, vec![1, 2]).unwrap().collect();
        assert_eq!(mixed.len(), 2);
        pool.close().unwrap();
        for w in workers {
            w.assert_success();
        }
        assert!(matches!(pool.apply(&SQUARE, 1), Err(RemoteError::Closed)));
    });
}

/// Host A takes a `first_run_hangs` task and is SIGKILLed while running it (its local pool
/// dies with it); host B starts. Returns what the caller then gets and the runs counted.
fn kill_the_first_host(retries: u32) -> (Result<i64, RemoteError>, i64) {
    let s = RedisServer::start();
    let r = Redis::connect(&s.url()).unwrap();
    let runs = RedisAtomic::create(&r, "runs", 0i64).unwrap();
    let pool = RemotePool::connect_with_lease(&r, "p", Duration::from_millis(500))
        .unwrap()
        .retries(retries);
    let mut a = worker(&s.url(), "p", None);
    let result = pool.apply_async(&HANGS, s.url()).unwrap();
    r.event("started").unwrap().wait().unwrap();
    a.signal(Signal::KILL);
    a.wait();
    let b = worker(&s.url(), "p", None);
    let got = result.get();
    let n = runs.load().unwrap();
    pool.close().unwrap();
    b.assert_success();
    (got, n)
}

#[test]
fn a_worker_host_killed_mid_task_has_the_task_rerun_elsewhere_once() {
    with_deadline(DEADLINE, || {
        let (got, runs) = kill_the_first_host(1);
        assert_eq!(got, Ok(1), "the second run answers");
        assert_eq!(runs, 2);
    });
}

#[test]
fn retries_bound_the_reruns_of_a_task_whose_workers_vanish() {
    with_deadline(DEADLINE, || {
        let (got, runs) = kill_the_first_host(0);
        assert_eq!(got, Err(RemoteError::Lost { attempts: 1 }));
        assert_eq!(runs, 1, "not run again");
    });
}

#[test]
fn cancelled_and_forged_tasks_never_run() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::builder(&s.url())
            .authkey("pool-key")
            .connect()
            .unwrap();
        let marks = RedisAtomic::create(&r, "marks", 0i64).unwrap();
        let pool = RemotePool::connect(&r, "p").unwrap();
        // Cancelled before any worker exists.
        let c = pool.apply_async(&MARK, s.url()).unwrap();
        assert!(c.cancel().unwrap());
        // A well-formed "mark" task written by a client without the key (the fields of a
        // task message, in order, in the queue's format).
        #[derive(serde::Serialize)]
        struct Forged {
            id: u64,
            reply: String,
            task: String,
            args: Vec<u8>,
            timeout_ms: Option<u64>,
            retries: u32,
        }
        let mut args = Vec::new();
        mproc_queue::codec::encode_into(&vec![s.url()], &mut args).unwrap();
        let forged = Forged {
            id: 999,
            reply: "elsewhere".into(),
            task: "mark".into(),
            args,
            timeout_ms: None,
            retries: 0,
        };
        let mut body = Vec::new();
        mproc_queue::codec::encode_into(&forged, &mut body).unwrap();
        let raw = redis::Client::open(s.url()).unwrap();
        let mut con = raw.get_connection().unwrap();
        for tag in [&[][..], &[7u8; 32][..]] {
            let _: String = redis::cmd("XADD")
                .arg("mproc:{p}:s")
                .arg("*")
                .arg("v")
                .arg(&body)
                .arg("h")
                .arg(tag)
                .query(&mut con)
                .unwrap();
        }
        let w = worker(&s.url(), "p", Some("pool-key"));
        assert_eq!(
            pool.apply(&MARK, s.url()).unwrap(),
            1,
            "only the genuine task ran"
        );
        assert_eq!(c.get(), Err(RemoteError::Cancelled));
        pool.close().unwrap();
        w.assert_success();
        assert_eq!(marks.load().unwrap(), 1);
    });
}

/// How many entries of the pool `pool`'s task stream no worker has read yet.
fn unread(url: &str, pool: &str) -> i64 {
    let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(format!("mproc:{{{pool}}}:s"))
        .query(&mut con)
        .unwrap();
    match groups.first().and_then(|g| g.get("lag")) {
        Some(redis::Value::Int(n)) => *n,
        other => panic!("no lag in XINFO GROUPS: {other:?}"),
    }
}

/// Queues `hold` tasks until the worker (one local process, room for four tasks) has read
/// four of them and reads no more: what is queued next stays unread until `event` is set.
fn fill_worker(pool: &RemotePool, url: &str, event: &str) -> Vec<mproc_redis::RemoteResult<i64>> {
    let holds: Vec<_> = (0..4)
        .map(|_| {
            pool.apply_async(&HOLD, (url.to_string(), event.to_string()))
                .unwrap()
        })
        .collect();
    let t = std::time::Instant::now();
    while unread(url, "p") > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the worker reads nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    holds
}

#[test]
fn tasks_cancelled_while_queued_behind_a_busy_worker_never_run() {
    // The worker reads new tasks in its fast path (a long lease: no claim pass) and knows
    // the cancel set by its version: each cancellation must reach it anyway.
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let url = s.url();
        let r = Redis::connect(&url).unwrap();
        let marks = RedisAtomic::create(&r, "marks", 0i64).unwrap();
        let pool = RemotePool::connect(&r, "p").unwrap();
        let w = worker_with(&url, "p", None, 1, Duration::from_secs(30));
        assert_eq!(pool.apply(&SQUARE, 3).unwrap(), 9);
        let mut cancelled = Vec::new();
        let mut ran = Vec::new();
        for round in 0..4 {
            let event = format!("release{round}");
            let holds = fill_worker(&pool, &url, &event);
            let before = pool.apply_async(&MARK, url.clone()).unwrap();
            let c = pool.apply_async(&MARK, url.clone()).unwrap();
            let after = pool.apply_async(&MARK, url.clone()).unwrap();
            assert_eq!(unread(&url, "p"), 3, "round {round}: queued, not read");
            assert!(c.cancel().unwrap());
            r.event(&event).unwrap().set().unwrap();
            for h in holds {
                assert_eq!(h.get(), Ok(0));
            }
            ran.push(before.get().unwrap());
            ran.push(after.get().unwrap());
            cancelled.push(c);
            // A task queued after the cancellation, with the set unchanged, runs.
            ran.push(pool.apply(&MARK, url.clone()).unwrap());
        }
        for c in cancelled {
            assert_eq!(c.get(), Err(RemoteError::Cancelled));
        }
        ran.sort_unstable();
        assert_eq!(
            ran,
            (1..=12).collect::<Vec<i64>>(),
            "every other task ran once"
        );
        assert_eq!(marks.load().unwrap(), 12, "no cancelled task ran");
        pool.close().unwrap();
        w.assert_success();
    });
}

#[test]
fn a_running_task_cancelled_by_its_caller_is_stopped_on_its_host() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let pid = RedisAtomic::create(&r, "pid", 0i64).unwrap();
        let pool = RemotePool::connect(&r, "p").unwrap();
        let w = worker(&s.url(), "p", None);
        let running = pool.apply_async(&HANG_AND_TELL, s.url()).unwrap();
        r.event("started").unwrap().wait().unwrap();
        let pid = pid.load().unwrap() as i32;
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

        assert!(running.cancel().unwrap());
        assert_eq!(running.get(), Err(RemoteError::Cancelled));
        // The process running it on the worker host is killed (and reaped by that host's
        // pool), and its answer, `Cancelled`, reaches the caller and is dropped.
        let t = std::time::Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() || pool.dropped_answers() == 0
        {
            assert!(t.elapsed() < Duration::from_secs(20), "the task still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The worker goes on with a replacement process.
        assert_eq!(pool.apply(&SQUARE, 12).unwrap(), 144);
        assert_eq!(pool.map(&SQUARE, (0..10).collect()).unwrap()[9], 81);
        pool.close().unwrap();
        w.assert_success();
    });
}

#[test]
fn a_worker_paused_past_its_lease_has_its_late_answer_dropped() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let runs = RedisAtomic::create(&r, "runs", 0i64).unwrap();
        let pool = RemotePool::connect_with_lease(&r, "p", Duration::from_millis(500)).unwrap();
        let a = worker(&s.url(), "p", None);
        let result = pool.apply_async(&WAITS, s.url()).unwrap();
        r.event("started").unwrap().wait().unwrap();
        // Host A stops (its lease renewals with it); B takes the task after the lease.
        a.signal(Signal::STOP);
        let b = worker(&s.url(), "p", None);
        assert_eq!(result.get().unwrap(), 2, "B's run answers");
        // A resumes and finishes its run: its answer arrives and is dropped.
        a.signal(Signal::CONT);
        r.event("release").unwrap().set().unwrap();
        let t = std::time::Instant::now();
        while pool.dropped_answers() == 0 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "A's late answer never came"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(pool.dropped_answers(), 1);
        assert_eq!(runs.load().unwrap(), 2);
        pool.close().unwrap();
        a.assert_success();
        b.assert_success();
    });
}

#[cfg(feature = "progress")]
#[test]
fn map_with_a_progress_bar_gives_the_same_results() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        let pool = RemotePool::connect(&r, "p")
            .unwrap()
            .chunksize(7)
            .progress(true);
        let w = worker(&s.url(), "p", None);
        let expected: Vec<u64> = (0..300).map(square).collect();
        assert_eq!(pool.map(&SQUARE, (0..300).collect()).unwrap(), expected);
        pool.close().unwrap();
        w.assert_success();
    });
}
