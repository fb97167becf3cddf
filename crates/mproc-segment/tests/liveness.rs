//! The liveness roll across `fork`: a child draws its own token (it must not keep its
//! parent's alive), and a reaped child's token is dead.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use mproc_segment::liveness::{UNKNOWN, me, peer_alive};

#[test]
fn forked_child_has_its_own_token_and_its_death_is_seen() {
    let parent = me();
    let (mut here, mut there) = UnixStream::pair().unwrap();
    let child = mproc_testkit::fork_child(move || {
        let mine = me();
        let ok = mine != parent && mine != 0 && mine != UNKNOWN && peer_alive(parent);
        let _ = there.write_all(&mine.to_ne_bytes());
        if ok { 0 } else { 1 }
    });
    here.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut b = [0u8; 4];
    here.read_exact(&mut b).unwrap();
    let token = u32::from_ne_bytes(b);
    child.assert_success();
    assert!(!peer_alive(token), "a reaped child's token is dead");
    assert!(peer_alive(parent));
}
