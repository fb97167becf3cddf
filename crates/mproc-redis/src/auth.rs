//! Python's `authkey`, for entries on a server: every entry carries an HMAC-SHA256 of the
//! object's name and its bytes under a key shared by the processes that use it. An entry
//! without a valid one is refused, never decoded.
//!
//! What it protects against: anyone who can write to the server but does not hold the key
//! (another application, a compromised client) cannot make a consumer act on an entry of
//! theirs, nor alter one in place, nor move one from one queue to another. What it does not:
//! reading entries (use TLS and ACLs), and replaying an entry already in the same queue
//! (consumers dedupe by entry id, or by an id inside their message).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The length of a tag.
pub(crate) const TAG_LEN: usize = 32;

/// A shared key.
#[derive(Clone)]
pub(crate) struct AuthKey(Vec<u8>);

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    pub(crate) fn new(key: &[u8]) -> AuthKey {
        AuthKey(key.to_vec())
    }

    fn mac(&self, domain: &str, name: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        for part in [domain.as_bytes(), name.as_bytes()] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.update(body);
        mac
    }

    /// The tag of `body` in object `name` of kind `domain`.
    pub(crate) fn sign(&self, domain: &str, name: &str, body: &[u8]) -> Vec<u8> {
        self.mac(domain, name, body)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `tag` is `body`'s (compared in constant time).
    pub(crate) fn verify(&self, domain: &str, name: &str, body: &[u8], tag: &[u8]) -> bool {
        self.mac(domain, name, body).verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_checks_only_its_own_key_name_and_body() {
        let k = AuthKey::new(b"secret");
        let t = k.sign("queue", "jobs", b"payload");
        assert_eq!(t.len(), TAG_LEN);
        assert!(k.verify("queue", "jobs", b"payload", &t));
        assert!(!k.verify("queue", "jobs", b"payloaD", &t));
        assert!(!k.verify("queue", "jobs2", b"payload", &t));
        assert!(!k.verify("value", "jobs", b"payload", &t));
        assert!(!AuthKey::new(b"other").verify("queue", "jobs", b"payload", &t));
        assert!(!k.verify("queue", "jobs", b"payload", &t[..31]));
        // Name and body boundaries are length-prefixed: moving a byte across them fails.
        let t2 = k.sign("queue", "job", b"spayload");
        assert!(!k.verify("queue", "jobs", b"payload", &t2));
    }
}
