//! Auth keys (HMAC on every entry), server passwords and ACL users, against a real server.

use std::time::Duration;

use mproc_queue::GetError;
use mproc_redis::{Redis, RedisError, RedisValue};
use mproc_testkit::{RedisServer, fork_child, with_deadline};

const DEADLINE: Duration = Duration::from_secs(60);

fn keyed(s: &RedisServer, key: &str) -> Redis {
    Redis::builder(&s.url()).authkey(key).connect().unwrap()
}

/// Writes an entry into the queue's stream as a client without the key would.
fn forge(s: &RedisServer, queue: &str, value: &[u8], tag: &[u8]) {
    let c = redis::Client::open(s.url()).unwrap();
    let mut con = c.get_connection().unwrap();
    let _: String = redis::cmd("XADD")
        .arg(format!("mproc:{{{queue}}}:s"))
        .arg("*")
        .arg("v")
        .arg(value)
        .arg("h")
        .arg(tag)
        .query(&mut con)
        .unwrap();
}

#[test]
fn a_forged_or_altered_entry_is_refused_and_never_delivered_again() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = keyed(&s, "sesame");
        let q = r.queue("signed").create::<String>().unwrap();
        q.put("genuine 1".into()).unwrap();
        // postcard's bytes of "rm -rf /": decodable, but not signed with the key.
        let mut body = vec![8u8];
        body.extend_from_slice(b"rm -rf /");
        forge(&s, "signed", &body, &[0u8; 32]);
        forge(&s, "signed", &body, b"");
        q.put("genuine 2".into()).unwrap();

        assert_eq!(q.get().unwrap(), "genuine 1");
        for _ in 0..2 {
            match q.get() {
                Err(GetError::Unreadable { reason }) => {
                    assert!(reason.contains("HMAC"), "{reason}")
                }
                other => panic!("a forged entry was not refused: {other:?}"),
            }
        }
        assert_eq!(q.get().unwrap(), "genuine 2");
        q.ack().unwrap();
        // Refused entries were dropped, not left to come back after a lease.
        assert_eq!(q.len().unwrap(), 0);
        assert_eq!(q.try_get(), Err(GetError::Empty));
    });
}

#[test]
fn keys_must_match_between_producers_and_consumers() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = keyed(&s, "right");
        let q = r.queue("k").create::<u32>().unwrap();
        q.put(1).unwrap();
        // Without a key: the queue is not opened at all.
        let plain = Redis::connect(&s.url()).unwrap();
        assert!(matches!(
            plain.queue("k").open::<u32>(),
            Err(RedisError::AuthMismatch { .. })
        ));
        // A keyed client cannot use a queue made without a key either.
        plain.queue("unsigned").create::<u32>().unwrap();
        assert!(matches!(
            r.queue("unsigned").open::<u32>(),
            Err(RedisError::AuthMismatch { .. })
        ));
        // A consumer in another process with the wrong key refuses the genuine entry.
        let url = s.url();
        let child = fork_child(move || {
            let wrong = Redis::builder(&url).authkey("wrong").connect().unwrap();
            let q = wrong.queue("k").open::<u32>().unwrap();
            match q.get() {
                Err(GetError::Unreadable { .. }) => 0,
                _ => 1,
            }
        });
        child.assert_success();
    });
}

#[test]
fn signed_values_refuse_tampering() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start();
        let r = keyed(&s, "k");
        let v = RedisValue::create(&r, "cfg", &(1u32, "a".to_string())).unwrap();
        assert_eq!(v.get().unwrap(), (1, "a".to_string()));
        let c = redis::Client::open(s.url()).unwrap();
        let mut con = c.get_connection().unwrap();
        let _: () = redis::cmd("HSET")
            .arg("mproc:{cfg}:value")
            .arg("v")
            .arg(&[2u8, 1, b'b'][..])
            .query(&mut con)
            .unwrap();
        assert!(matches!(v.get(), Err(RedisError::Unreadable { .. })));
    });
}

#[test]
fn server_passwords_and_acl_users_come_from_the_url() {
    with_deadline(DEADLINE, || {
        let s = RedisServer::start_with(&[
            "--requirepass",
            "hunter2",
            "--user",
            "worker",
            "on",
            ">w0rk",
            "~*",
            "&*",
            "+@all",
        ]);
        let base = format!("127.0.0.1:{}/", s.port());
        assert!(matches!(
            Redis::connect(&format!("redis://{base}")),
            Err(RedisError::Unavailable { .. })
        ));
        assert!(matches!(
            Redis::connect(&format!("redis://:wrong@{base}")),
            Err(RedisError::Unavailable { .. })
        ));
        let r = Redis::connect(&format!("redis://:hunter2@{base}")).unwrap();
        r.queue("q").create::<u8>().unwrap().put(5).unwrap();
        let w = Redis::connect(&format!("redis://worker:w0rk@{base}")).unwrap();
        assert_eq!(w.queue("q").open::<u8>().unwrap().get().unwrap(), 5);
    });
}
