//! TLS against memcached started with `-Z`, with certificates made in the test: nodes are
//! reached by IP and verified against their hostname; bad certificates are clear errors and
//! never a fall-back to plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use elasticache_client::{Client, ClientConfig, Error, ErrorKind, NodeAddress, TlsSettings};
use support::certs::{memcached_tls_args, Authority, CertDir};
use support::Memcached;

/// A TLS memcached whose certificate names `names`, signed by `authority`.
fn tls_node(dir: &CertDir, authority: &Authority, names: &[&str], expired: bool) -> Memcached {
    let leaf = authority.leaf(dir, "node", names, expired);
    Memcached::start_tls(&memcached_tls_args(&leaf, None), None)
}

/// A client for `node` by IP, verifying the certificate against `hostname`.
fn client(node: &Memcached, hostname: &str, settings: TlsSettings) -> Client {
    let config = {
        let mut custom = ClientConfig::default();
        custom.tls = Some(settings.build().unwrap());
        custom
    };
    let address = NodeAddress {
        tls_name: Some(hostname.to_owned()),
        ..NodeAddress::new("127.0.0.1", node.port)
    };
    Client::new(&[address], config)
}

/// A client for `node` verifying against "localhost" and trusting `authority`.
fn trusted_client(dir: &CertDir, authority: &Authority, node: &Memcached) -> Client {
    client(
        node,
        "localhost",
        trusting(authority.write_ca(dir, "ca.pem")),
    )
}

fn trusting(ca: std::path::PathBuf) -> TlsSettings {
    {
        let mut custom = TlsSettings::default();
        custom.ca_file = Some(ca);
        custom
    }
}

#[test]
fn a_node_reached_by_ip_is_verified_against_its_hostname() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let ca = authority.write_ca(&dir, "ca.pem");
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let client = client(&node, "localhost", trusting(ca));
    assert!(client.set("k", 0, b"secret", 0).unwrap());
    assert_eq!(client.get("k").unwrap().unwrap().data, &b"secret"[..]);
    let found = client.get_many(&["k", "missing"]).unwrap();
    assert_eq!(found[0].as_ref().unwrap().data, &b"secret"[..]);
    client.flush_all().unwrap();
}

#[test]
fn ca_certificates_can_be_given_as_der() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let ca_pem = std::fs::read_to_string(authority.write_ca(&dir, "ca.pem")).unwrap();
    let der = rustls_pem_to_der(&ca_pem);
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let settings = {
        let mut custom = TlsSettings::default();
        custom.ca_certificates = vec![der];
        custom
    };
    assert!(client(&node, "localhost", settings)
        .set("k", 0, b"v", 0)
        .unwrap());
}

fn rustls_pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    decode_base64(&body)
}

fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | ALPHABET.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn assert_tls_failure(
    result: elasticache_client::Result<Option<elasticache_client::Item>>,
    expected: &str,
) {
    let error = result.unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error}");
    assert_eq!(error.kind(), ErrorKind::Connection);
    assert!(error.to_string().contains(expected), "{error}");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let dir = CertDir::new();
    let ours = Authority::new();
    let theirs = Authority::new();
    let node = tls_node(&dir, &theirs, &["localhost"], false);
    let client = client(&node, "localhost", trusting(ours.write_ca(&dir, "ca.pem")));
    assert_tls_failure(client.get("k"), "not trusted: UnknownIssuer");
}

#[test]
fn an_expired_certificate_is_refused() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["localhost"], true);
    let client = trusted_client(&dir, &authority, &node);
    assert_tls_failure(client.get("k"), "Expired");
}

#[test]
fn a_certificate_for_another_name_is_refused_unless_hostname_checks_are_off() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let ca = authority.write_ca(&dir, "ca.pem");
    let node = tls_node(&dir, &authority, &["other.example"], false);
    assert_tls_failure(
        client(&node, "localhost", trusting(ca.clone())).get("k"),
        "NotValidForName",
    );
    let lenient = {
        let mut custom = trusting(ca);
        custom.skip_hostname_check = true;
        custom
    };
    assert!(client(&node, "localhost", lenient)
        .set("k", 0, b"v", 0)
        .unwrap());
}

#[test]
fn tls_server_name_overrides_the_hostname() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["cache.internal"], false);
    let settings = {
        let mut custom = trusting(authority.write_ca(&dir, "ca.pem"));
        custom.server_name = Some("cache.internal".to_owned());
        custom
    };
    assert!(client(&node, "localhost", settings)
        .set("k", 0, b"v", 0)
        .unwrap());
}

#[test]
fn a_plaintext_server_is_an_error_never_a_plaintext_exchange() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let plain = Memcached::start();
    let client = client(
        &plain,
        "localhost",
        trusting(authority.write_ca(&dir, "ca.pem")),
    );
    let error = client.set("k", 0, b"v", 0).unwrap_err();
    assert!(matches!(error, Error::Tls { .. }), "{error}");
    assert!(error.to_string().contains("does not speak TLS"), "{error}");
    assert_eq!(plain.stat("cmd_set"), 0, "nothing was sent in plaintext");
}

#[test]
fn client_certificates_are_presented_when_the_server_requires_them() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let ca = authority.write_ca(&dir, "ca.pem");
    let leaf = authority.leaf(&dir, "node", &["localhost"], false);
    let me = authority.leaf(&dir, "client", &["client.example"], false);
    let node = Memcached::start_tls(&memcached_tls_args(&leaf, Some(&ca)), Some(&me));
    let without = client(&node, "localhost", trusting(ca.clone()));
    // The server refuses the handshake with TLS 1.3's certificate_required alert.
    assert_tls_failure(
        without.get("k"),
        "received fatal alert: CertificateRequired",
    );

    let settings = {
        let mut custom = trusting(ca);
        custom.client_cert_file = Some(me.cert);
        custom.client_key_file = Some(me.key);
        custom
    };
    let with = client(&node, "localhost", settings);
    assert!(with.set("k", 0, b"v", 0).unwrap());
    assert_eq!(with.get("k").unwrap().unwrap().data, &b"v"[..]);
}

#[test]
fn bad_tls_settings_are_configuration_errors() {
    let dir = CertDir::new();
    let missing = {
        let mut custom = TlsSettings::default();
        custom.ca_file = Some(dir.path("nope.pem"));
        custom
    };
    std::fs::write(dir.path("empty.pem"), "").unwrap();
    let empty = {
        let mut custom = TlsSettings::default();
        custom.ca_file = Some(dir.path("empty.pem"));
        custom
    };
    let half = {
        let mut custom = TlsSettings::default();
        custom.client_cert_file = Some(dir.path("c.pem"));
        custom
    };
    for (settings, expected) in [
        (missing, "cannot read"),
        (empty, "holds no certificate"),
        (half, "needs both tls_cert_file and tls_key_file"),
    ] {
        let error = settings.build().unwrap_err();
        assert!(matches!(error, Error::TlsConfig { .. }), "{error}");
        assert_eq!(error.kind(), ErrorKind::Client);
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn later_connections_to_a_node_resume_the_tls_session() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let client = trusted_client(&dir, &authority, &node);
    for round in 0..3 {
        assert!(client.set("k", 0, b"v", 0).unwrap(), "round {round}");
        client.topology().nodes()[0].close_idle(); // the next operation opens a new connection
    }
    let (opened, resumed) = client.topology().nodes()[0].connections_opened();
    assert_eq!(opened, 3);
    assert_eq!(
        resumed, 2,
        "only the first connection should need a full handshake"
    );
}

#[test]
fn large_batches_cross_many_tls_records() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let client = trusted_client(&dir, &authority, &node);
    let keys: Vec<String> = (0..300)
        .map(|i| format!("key-{i}-{}", "x".repeat(200)))
        .collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, u32, &[u8])> = refs.iter().map(|k| (*k, 0, k.as_bytes())).collect();
    assert!(client.set_many(&items, 0).unwrap().is_empty());
    let found = client.get_many(&refs).unwrap();
    assert!(found.iter().all(Option::is_some));
    let big = vec![7u8; 500_000];
    assert!(client.set("big", 0, &big, 0).unwrap());
    assert_eq!(client.get("big").unwrap().unwrap().data, big);
}

#[test]
fn event_loop_gets_read_values_across_tls_records() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let client = trusted_client(&dir, &authority, &node);
    let large = vec![b'z'; 300 * 1024];
    client.set("small", 0, b"tiny", 0).unwrap();
    client.set("large", 0, &large, 0).unwrap();
    for _ in 0..20 {
        let small = support::event_loop_get(&client, "small").unwrap();
        assert_eq!(small.unwrap().data, &b"tiny"[..]);
        let read = support::event_loop_get(&client, "large").unwrap();
        assert_eq!(read.unwrap().data, large);
        assert_eq!(support::event_loop_get(&client, "absent").unwrap(), None);
    }
    assert_eq!(client.topology().nodes()[0].connections_opened().0, 1);
}

#[test]
fn event_loop_batches_and_large_writes_cross_many_tls_records() {
    let dir = CertDir::new();
    let authority = Authority::new();
    let node = tls_node(&dir, &authority, &["localhost"], false);
    let client = trusted_client(&dir, &authority, &node);
    // Warm the pool: the event-driven steps below must never need the blocking one.
    client.flush_all().unwrap();
    let mut items = elasticache_client::ItemList::with_capacity(300);
    let mut keys = elasticache_client::KeyList::with_capacity(300);
    for i in 0..300 {
        let key = format!("key-{i}-{}", "x".repeat(200));
        items.push(&key, 0, key.as_bytes());
        keys.push(&key);
    }
    // A set whose request is far larger than a socket takes at once: written in parts, the
    // TLS records flushed as the socket drains.
    let big = vec![9u8; 700_000];
    items.push("big", 3, &big);
    let mut set_many = client.start_set_many(items, 0).unwrap();
    support::drive(&client, &mut set_many);
    assert_eq!(set_many.finish(&client).unwrap(), Vec::<usize>::new());
    keys.push("big");
    let mut get_many = client.start_get_many(keys).unwrap();
    support::drive(&client, &mut get_many);
    let mut read = 0;
    get_many
        .finish(&client)
        .unwrap()
        .try_for_each(|position, flags, data| {
            read += 1;
            if position == 300 {
                assert_eq!((flags, data), (3, &big[..]));
            }
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(read, 301);
    assert_eq!(client.topology().nodes()[0].connections_opened().0, 1);
}
