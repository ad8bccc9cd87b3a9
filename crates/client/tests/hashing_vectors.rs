//! Key placement matches pymemcache 4.0.0: every vector generated with pymemcache itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use elasticache_client::{murmur3_32, Ring};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/pymemcache-hashing.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
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
