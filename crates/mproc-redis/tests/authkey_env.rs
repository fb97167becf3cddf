//! The auth key from `MPROC_AUTHKEY`. A binary of its own with one test: setting an
//! environment variable is only sound while no other thread reads the environment.

use std::time::Duration;

use mproc_queue::GetError;
use mproc_redis::{AUTHKEY_ENV, Redis};
use mproc_testkit::{RedisServer, fork_child, with_deadline};

#[test]
fn the_auth_key_comes_from_the_environment() {
    // SAFETY: the only test of this binary, before it starts any thread that reads the
    // environment (the deadline watchdog does not).
    unsafe { std::env::set_var(AUTHKEY_ENV, "from-env") };
    with_deadline(Duration::from_secs(60), || {
        let s = RedisServer::start();
        let r = Redis::connect(&s.url()).unwrap();
        assert!(r.is_authenticated());
        let q = r.queue("k").create::<u32>().unwrap();
        // A child inherits the environment: same key, entries accepted both ways.
        let url = s.url();
        let child = fork_child(move || {
            let r = Redis::connect(&url).unwrap();
            let q = r.queue("k").open::<u32>().unwrap();
            q.put(2).unwrap();
            0
        });
        child.assert_success();
        assert_eq!(q.get().unwrap(), 2);
        // An explicit key wins over the environment's.
        let other = Redis::builder(&s.url())
            .authkey("explicit")
            .connect()
            .unwrap();
        other.queue("k").open::<u32>().unwrap().put(3).unwrap();
        assert!(matches!(q.get(), Err(GetError::Unreadable { .. })));
    });
}
