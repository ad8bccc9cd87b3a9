//! Key placement matches pymemcache 4.0.0 and pylibmc 1.6.3 (libmemcached): every vector
//! generated with the library itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use elasticache_client::{murmur3_32, Client, ClientConfig, Hashing, NodeAddress, Ring};
use serde_json::Value;

fn testdata(name: &str) -> Value {
    let path = format!("{}/../../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vectors() -> Value {
    testdata("pymemcache-hashing.json")
}

#[test]
fn pylibmc_placement_matches_every_cluster() {
    let vectors = testdata("pylibmc-hashing.json");
    let mut checked = 0;
    let mut modes = std::collections::HashSet::new();
    for case in vectors["cases"].as_array().unwrap() {
        let hashing = match case["hashing"].as_str().unwrap() {
            "pylibmc" => Hashing::Pylibmc,
            "ketama" => Hashing::Ketama,
            other => panic!("unknown mode {other}"),
        };
        modes.insert(case["hashing"].as_str().unwrap());
        let nodes: Vec<NodeAddress> = case["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| NodeAddress::parse(n.as_str().unwrap()).unwrap())
            .collect();
        let ring = Ring::with_hashing(hashing, &nodes);
        // And through a client configured for it (no connection is made).
        let mut config = ClientConfig::default();
        config.hashing = hashing;
        let client = Client::new(&nodes, config);
        for (key, index) in case["placement"].as_object().unwrap() {
            let expected = usize::try_from(index.as_u64().unwrap()).unwrap();
            assert_eq!(
                ring.node_for(key),
                Some(expected),
                "{hashing:?}: key {key:?} on {:?}",
                case["nodes"]
            );
            assert_eq!(client.topology().node_index_for(key), Some(expected));
            checked += 1;
        }
    }
    assert_eq!(modes.len(), 2);
    assert!(checked > 5000, "only {checked} placements checked");
}

#[test]
fn murmur3_matches_every_vector() {
    let vectors = vectors();
    let cases = vectors["murmur3_32"].as_array().unwrap();
    assert!(cases.len() > 500);
    for case in cases {
        let input = case["input"].as_str().unwrap();
        let expected = case["murmur3_32"].as_u64().unwrap();
        assert_eq!(
            u64::from(murmur3_32(input)),
            expected,
            "murmur3_32({input:?})"
        );
    }
}

#[test]
fn placement_matches_every_cluster() {
    let vectors = vectors();
    let clusters = vectors["rendezvous"].as_array().unwrap();
    let mut checked = 0;
    for cluster in clusters {
        let names: Vec<&str> = cluster["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        let ring = Ring::new(names.iter().copied());
        for (key, node) in cluster["placement"].as_object().unwrap() {
            let chosen = ring.node_for(key).map(|i| names[i]);
            assert_eq!(chosen, node.as_str(), "key {key:?} on {names:?}");
            checked += 1;
        }
    }
    assert!(checked > 1000, "only {checked} placements checked");
}
