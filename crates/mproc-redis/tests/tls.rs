//! `rediss://`: a real `redis-server` that speaks only TLS, with a CA and certificates made
//! for the test. Built with the `tls` feature (`cargo xtask test` runs it).
#![cfg(feature = "tls")]

use std::path::Path;
use std::time::Duration;

use mproc_redis::{Redis, RedisError};
use mproc_testkit::{RedisServer, unique_name, with_deadline};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Parameters for a certificate named `cn` for `names` (each its own distinguished name: with
/// rcgen's one default name, OpenSSL would take a leaf for self-signed).
fn params(cn: &str, names: &[&str]) -> CertificateParams {
    let mut p =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA,
/// written as PEM files into `dir`. Returns (CA, client cert, client key) as PEM.
fn make_certs(dir: &Path) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = params("mproc test CA", &[]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = params("mproc test server", &["127.0.0.1", "localhost"])
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = params("mproc test client", &["client"])
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    (ca.pem(), client.pem(), client_key.serialize_pem())
}

fn start(dir: &Path, auth_clients: bool) -> RedisServer {
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let auth = if auth_clients { "yes" } else { "no" };
    RedisServer::start_tls(&[
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        auth,
    ])
}

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn queues_and_locks_work_over_tls_and_an_unknown_ca_is_refused() {
    with_deadline(Duration::from_secs(60), || {
        let dir = Dir(std::env::temp_dir().join(unique_name("tls")));
        let (ca, _, _) = make_certs(&dir.0);
        let s = start(&dir.0, false);

        let r = Redis::builder(&s.tls_url())
            .tls_root_cert(ca.clone())
            .connect()
            .unwrap();
        let q = r.queue("over-tls").capacity(8).create::<String>().unwrap();
        q.put_many(vec!["a".into(), "b".into()]).unwrap();
        assert_eq!(q.get().unwrap(), "a");
        assert_eq!(q.get().unwrap(), "b");
        let lock = r.lock("over-tls-lock").unwrap();
        drop(lock.lock().unwrap());

        // The server's certificate is not signed by a CA the system trusts: refused, with
        // the reason.
        match Redis::connect(&s.tls_url()) {
            Err(RedisError::Unavailable { reason }) => {
                assert!(reason.to_lowercase().contains("certificate"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Plain text to a TLS port: no answer that passes for Redis.
        let plain = Redis::builder(&s.url())
            .connect_timeout(Duration::from_secs(2))
            .connect();
        assert!(plain.is_err(), "{plain:?}");
    });
}

#[test]
fn a_server_that_asks_for_client_certificates_gets_one() {
    with_deadline(Duration::from_secs(60), || {
        let dir = Dir(std::env::temp_dir().join(unique_name("mtls")));
        let (ca, cert, key) = make_certs(&dir.0);
        let s = start(&dir.0, true);

        let r = Redis::builder(&s.tls_url())
            .tls_root_cert(ca.clone())
            .tls_client_cert(cert, key)
            .connect()
            .unwrap();
        let v = mproc_redis::RedisAtomic::<i64>::create(&r, "mtls-counter", 0).unwrap();
        assert_eq!(v.fetch_add(5).unwrap(), 0);
        assert_eq!(v.load().unwrap(), 5);

        // Without a client certificate the server closes the connection.
        let anonymous = Redis::builder(&s.tls_url())
            .tls_root_cert(ca)
            .connect_timeout(Duration::from_secs(2))
            .connect();
        assert!(
            matches!(anonymous, Err(RedisError::Unavailable { .. })),
            "{anonymous:?}"
        );
    });
}
