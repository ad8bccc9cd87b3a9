//! `Client::metrics`: requests, hits and misses per node and key, the latency histogram, and
//! nothing counted with the counters off.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use elasticache_client::{Client, ClientConfig, NodeMetrics};
use support::Memcached;

fn count(pairs: &[(&'static str, u64)], name: &str) -> u64 {
    pairs
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, c)| *c)
}

fn node<'m>(nodes: &'m [NodeMetrics], name: &str) -> &'m NodeMetrics {
    nodes.iter().find(|n| n.node == name).unwrap()
}

#[test]
fn a_batch_counts_hits_and_misses_per_key_on_each_node() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let client = Client::connect_to(&[a.address(), b.address()], ClientConfig::default()).unwrap();
    let keys: Vec<String> = (0..10).map(|i| format!("key-{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    for key in &refs[..4] {
        client.set(key, 0, b"v", 0).unwrap();
    }
    assert_eq!(client.get_many(&refs).unwrap().iter().flatten().count(), 4);
    let metrics = client.metrics();
    let topology = client.topology();
    for (index, n) in topology.nodes().iter().enumerate() {
        let mine: Vec<&str> = refs
            .iter()
            .copied()
            .filter(|k| topology.node_index_for(k) == Some(index))
            .collect();
        let hits = mine.iter().filter(|k| refs[..4].contains(k)).count() as u64;
        let counted = node(&metrics.nodes, &n.address.name);
        assert_eq!(
            (counted.hits, counted.misses),
            (hits, mine.len() as u64 - hits)
        );
        assert_eq!(count(&counted.requests, "set"), hits);
        assert_eq!(
            count(&counted.requests, "get_many"),
            u64::from(!mine.is_empty())
        );
        let requests: u64 = counted.requests.iter().map(|(_, c)| c).sum();
        assert_eq!(counted.latency_count, requests);
    }
}

#[test]
fn with_counters_off_nothing_is_counted() {
    let server = Memcached::start();
    let mut config = ClientConfig::default();
    config.counters = false;
    let client = Client::connect_to(&[server.address()], config).unwrap();
    client.set("k", 0, b"v", 0).unwrap();
    assert!(client.get("k").unwrap().is_some());
    let metrics = client.metrics();
    let counted = &metrics.nodes[0];
    assert_eq!(
        (counted.hits, counted.misses, counted.latency_count),
        (0, 0, 0)
    );
    assert!(counted.requests.iter().all(|(_, c)| *c == 0));
    // Connections are the pool's own count, kept either way.
    assert_eq!(counted.connections_opened, 1);
}
