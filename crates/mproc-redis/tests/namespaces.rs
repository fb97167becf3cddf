//! Consumers and workers that share no /dev/shm with the producer (a mount namespace with
//! its own tmpfs there) reach everything through Redis: nothing silently depends on shared
//! memory.

use std::time::Duration;

use mproc_queue::{GetError, Queue};
use mproc_redis::{Redis, RemotePool, Task, Worker};
use mproc_testkit::{RedisServer, fork_with_own_shm, unique_name, with_deadline};

fn triple(x: u64) -> u64 {
    3 * x
}
const TRIPLE: Task<u64, u64> = Task::new("triple", triple);

#[test]
fn a_consumer_and_a_worker_without_our_dev_shm_do_their_work_through_redis() {
    with_deadline(Duration::from_secs(90), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        // A segment of ours, which the namespaced processes must not see.
        let marker = unique_name("marker");
        let _local = Queue::<u8>::create(&marker, 4).unwrap();
        let q = r.queue("q").create::<String>().unwrap();
        let url = s.url();
        let m = marker.clone();
        let consumer = fork_with_own_shm(move || {
            if std::path::Path::new("/dev/shm").join(&m).exists() {
                return 10;
            }
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("q").open::<String>().unwrap();
            let mut n = 0;
            loop {
                match q.get() {
                    Ok(v) if v == format!("v{n}") => n += 1,
                    Err(GetError::Closed) => return if n == 20 { 0 } else { 11 },
                    _ => return 12,
                }
            }
        });
        let url = s.url();
        let worker = fork_with_own_shm(move || {
            let r = Redis::connect(&url).unwrap();
            // Its local pool's segments live in its own /dev/shm.
            match Worker::new(&r, "p").processes(2).register(&TRIPLE).run() {
                Ok(report) if report.tasks > 0 => 0,
                _ => 13,
            }
        });
        for i in 0..20 {
            q.put(format!("v{i}")).unwrap();
        }
        q.close().unwrap();
        let pool = RemotePool::connect(&r, "p").unwrap().chunksize(5);
        assert_eq!(pool.map(&TRIPLE, (0..40).collect()).unwrap()[39], 117);
        pool.close().unwrap();
        consumer.assert_success();
        worker.assert_success();
    });
}
