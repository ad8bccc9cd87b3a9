//! The local tier (`ClientConfig::local_cache`) against a real memcached: a hot key's reads
//! stop reaching its node (its `cmd_get`), this client's own writes are seen at once, another
//! client's within `ttl`, and what is kept stays within its bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use elasticache_client::{Client, ClientConfig, LeaseRequest, LocalCache};
use support::Memcached;

/// A tier keeping values `ttl`, of keys read `min_reads_per_second`, within the default
/// bounds.
fn local(ttl: Duration, min_reads_per_second: u32) -> LocalCache {
    let mut local = LocalCache::default();
    local.ttl = ttl;
    local.min_reads_per_second = min_reads_per_second;
    local
}

fn tiered(node: &Memcached, local: LocalCache) -> Client {
    let mut config = ClientConfig::default();
    config.local_cache = Some(local);
    Client::connect_to(&[node.address()], config).unwrap()
}

fn local_hits(client: &Client) -> u64 {
    client.metrics().nodes.iter().map(|n| n.local_hits).sum()
}

fn value(client: &Client, key: &str) -> Option<Vec<u8>> {
    client.get(key).unwrap().map(|item| item.data.to_vec())
}

#[test]
fn a_hot_key_is_served_from_memory_and_this_clients_writes_are_seen_at_once() {
    let node = Memcached::start();
    // Every key read is hot enough (how often a key must be read to be kept is the unit
    // tests' to show, on a clock of their own).
    let client = tiered(&node, local(Duration::from_secs(600), 0));
    assert!(client.set("hot", 5, b"one", 0).unwrap());
    let before = node.stat("cmd_get");
    assert_eq!(value(&client, "hot").as_deref(), Some(&b"one"[..]));
    assert_eq!(node.stat("cmd_get"), before + 1);
    for _ in 0..50 {
        let item = client.get("hot").unwrap().unwrap();
        assert_eq!((item.flags, &item.data[..]), (5, &b"one"[..]));
    }
    assert_eq!(node.stat("cmd_get"), before + 1, "served from memory");
    assert_eq!(local_hits(&client), 50);
    // A batch's keys are served from it too.
    let many = client.get_many(&["hot", "cold"]).unwrap();
    assert_eq!(many[0].as_ref().unwrap().data, &b"one"[..]);
    assert!(many[1].is_none());
    assert_eq!(local_hits(&client), 51);

    // A get-or-lease (stampede protection's read) of a key kept is a hit, with nothing to
    // lease; one read that way alone is kept too.
    let before = node.stat("cmd_get");
    let leased = client
        .get_or_lease("hot", LeaseRequest::new(10, None))
        .unwrap();
    assert_eq!(leased.item.unwrap().data, &b"one"[..]);
    assert!(!leased.won);
    assert_eq!(node.stat("cmd_get"), before, "served from memory");
    assert!(client.set("computed", 0, b"c", 0).unwrap());
    for _ in 0..5 {
        let leased = client
            .get_or_lease("computed", LeaseRequest::new(10, None))
            .unwrap();
        assert_eq!(leased.item.unwrap().data, &b"c"[..]);
    }
    assert_eq!(node.stat("cmd_get"), before + 1);
    // A miss leases as ever: nothing kept, the lease won.
    let missed = client
        .get_or_lease("absent", LeaseRequest::new(10, None))
        .unwrap();
    assert!(missed.item.is_none() && missed.won);

    // This client's write: the next read is the node's, and sees it.
    assert!(client.set("hot", 0, b"two", 0).unwrap());
    assert_eq!(value(&client, "hot").as_deref(), Some(&b"two"[..]));
    // Kept again, and served.
    let served = local_hits(&client);
    assert_eq!(value(&client, "hot").as_deref(), Some(&b"two"[..]));
    assert_eq!(local_hits(&client), served + 1);
    assert!(client.delete("hot").unwrap());
    assert_eq!(value(&client, "hot"), None);

    // A key read by batches alone is kept too.
    assert!(client.set("batched", 0, b"b", 0).unwrap());
    let before = node.stat("cmd_get");
    for _ in 0..5 {
        let many = client.get_many(&["batched"]).unwrap();
        assert_eq!(many[0].as_ref().unwrap().data, &b"b"[..]);
    }
    assert_eq!(node.stat("cmd_get"), before + 1);

    // flush_all (`cache.clear()`) empties it.
    assert!(client.set("hot", 0, b"three", 0).unwrap());
    assert_eq!(value(&client, "hot").as_deref(), Some(&b"three"[..]));
    assert_eq!(client.metrics().local_keys, 3);
    client.flush_all().unwrap();
    assert_eq!(client.metrics().local_keys, 0);
    assert_eq!(value(&client, "hot"), None);
}

#[test]
fn another_clients_write_is_seen_within_ttl() {
    let node = Memcached::start();
    let ttl = Duration::from_millis(500);
    let reader = tiered(&node, local(ttl, 0));
    // Another process's client: its writes do not reach the reader's tier.
    let writer = node.client();
    assert!(writer.set("flag", 0, b"old", 0).unwrap());
    assert_eq!(value(&reader, "flag").as_deref(), Some(&b"old"[..]));
    assert_eq!(reader.metrics().local_keys, 1);
    assert!(writer.set("flag", 0, b"new", 0).unwrap());
    let written = Instant::now();
    // Every read that starts ttl after the write ended sees it; earlier ones may not.
    let bound = Instant::now() + Duration::from_secs(30);
    loop {
        let started = Instant::now();
        let read = value(&reader, "flag");
        if read.as_deref() == Some(&b"new"[..]) {
            break;
        }
        assert_eq!(read.as_deref(), Some(&b"old"[..]));
        assert!(
            started < written + ttl,
            "a read {:?} after the write was still stale",
            started - written
        );
        assert!(Instant::now() < bound, "the write was never seen");
    }
}

#[test]
fn what_is_kept_stays_within_max_keys_and_max_bytes() {
    let node = Memcached::start();
    let mut bounded = local(Duration::from_secs(600), 0);
    bounded.max_keys = 5;
    bounded.max_bytes = 4096;
    let client = tiered(&node, bounded);
    let value = vec![b'x'; 1000];
    let keys: Vec<String> = (0..50).map(|i| format!("key{i}")).collect();
    for key in &keys {
        assert!(client.set(key, 0, &value, 0).unwrap());
    }
    let mut most = (0, 0);
    for _ in 0..3 {
        for key in &keys {
            assert_eq!(client.get(key).unwrap().unwrap().data, value);
            let metrics = client.metrics();
            most = (
                most.0.max(metrics.local_keys),
                most.1.max(metrics.local_bytes),
            );
        }
    }
    // 4096 bytes hold three of these values with their keys: the byte bound is the tighter.
    assert_eq!(most.0, 3, "{most:?}");
    assert!(most.1 <= 4096, "{most:?}");
    // The values it kept were served.
    let served = local_hits(&client);
    let last = keys.last().unwrap();
    assert_eq!(client.get(last).unwrap().unwrap().data, value);
    assert_eq!(local_hits(&client), served + 1);
}
