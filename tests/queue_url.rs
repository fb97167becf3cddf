//! `open_queue`: one program, the queue's place chosen by a URL (shared memory or a real
//! redis-server), with the producer in another process.

use std::time::Duration;

use mproc::queue::GetError;
use mproc::{MessageQueue, QueueUrlError, open_queue, redact};
use mproc_testkit::{RedisServer, fork_child, unique_name, with_deadline};

fn produce(q: &dyn MessageQueue<(u32, String)>) {
    for i in 0..50 {
        q.put((i, format!("job {i}"))).unwrap();
    }
    q.close().unwrap();
}

fn consume(q: &dyn MessageQueue<(u32, String)>) -> u32 {
    let mut sum = 0;
    loop {
        match q.get() {
            Ok((i, s)) => {
                assert_eq!(s, format!("job {i}"));
                sum += i;
            }
            Err(GetError::Closed) => return sum,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn the_same_program_runs_over_a_shm_url_and_a_redis_url() {
    with_deadline(Duration::from_secs(60), || {
        let server = RedisServer::start();
        let name = unique_name("url");
        let urls = [
            format!("shm:{name}?capacity=8"),
            format!("{}?queue=jobs&capacity=8&lease_ms=5000", server.url()),
            format!(
                "{}?queue=fast&capacity=8&delivery=at_most_once",
                server.url()
            ),
        ];
        for url in urls {
            let q = open_queue::<(u32, String)>(&url).unwrap();
            let u = url.clone();
            let producer = fork_child(move || {
                produce(&*open_queue::<(u32, String)>(&u).unwrap());
                0
            });
            assert_eq!(consume(&*q), (0..50).sum::<u32>(), "{url}");
            producer.assert_success();
        }
        // The creating handle unlinked its segment when it dropped.
        assert!(mproc_testkit::shm_entries(&name).is_empty());
    });
}

#[test]
fn bad_queue_urls_are_typed_errors_without_the_password() {
    for url in [
        "tcp://x",
        "shm:q?capacity=lots",
        "shm:q?colour=red",
        "shm:q?capacity",
        "redis://127.0.0.1:1/",
        "redis://127.0.0.1:1/?queue=q&delivery=sometimes",
    ] {
        assert!(
            matches!(open_queue::<u8>(url), Err(QueueUrlError::Invalid { .. })),
            "{url}"
        );
    }
    match open_queue::<u8>("redis://me:s3cret@127.0.0.1:1/?capacity=x&queue=q") {
        Err(e @ QueueUrlError::Invalid { .. }) => assert!(!e.to_string().contains("s3cret")),
        other => panic!("{:?}", other.err()),
    }
    // Nothing listens on port 1: a typed error, not a hang.
    assert!(matches!(
        open_queue::<u8>("redis://127.0.0.1:1/?queue=q"),
        Err(QueueUrlError::Redis(
            mproc::redis::RedisError::Unavailable { .. }
        ))
    ));
    assert_eq!(redact("redis://u:pw@h:1/"), "redis://u:***@h:1/");
    assert_eq!(redact("redis://h:1/"), "redis://h:1/");
}
