//! The gutter and the replay of undelivered invalidations, against real memcached processes:
//! a node frozen (SIGSTOP) while its keys are deleted, then resumed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use elasticache_client::{Client, Ttl};
use support::{freezing_config, key_on, wait_until, Memcached, Thaw};

#[test]
fn a_frozen_nodes_keys_go_to_the_gutter_and_its_missed_deletes_are_replayed_before_it_serves() {
    let (owner, other) = (Memcached::start(), Memcached::start());
    let config = freezing_config();
    let client = Client::connect_to(&[owner.address(), other.address()], config).unwrap();
    let key = key_on(&client, 0);
    assert!(client.set(&key, 0, b"old", 0).unwrap());

    owner.signal("STOP");
    let thaw = Thaw(&owner);
    // The delete times out on the frozen owner: remembered, not lost to `ignore_exc`.
    assert!(!client.delete(&key).unwrap());
    assert_eq!(client.get(&key).unwrap(), None, "read on the gutter");
    assert!(client.set(&key, 0, b"on the gutter", 3600).unwrap());
    let on_gutter = other.client().get(&key).unwrap().unwrap();
    assert_eq!(
        &on_gutter.data[..],
        b"on the gutter",
        "written to the gutter"
    );
    match client.ttl(&key).unwrap() {
        Ttl::Seconds(left) => assert!(left <= 10, "gutter_ttl caps the hour: {left}"),
        other => panic!("the gutter's value must expire: {other:?}"),
    }
    let metrics = client.metrics();
    assert!(
        metrics.gutter_reads >= 2 && metrics.gutter_writes >= 1,
        "{metrics:?}"
    );
    assert!(metrics.invalidations_waiting >= 1, "{metrics:?}");

    drop(thaw);
    wait_until("the missed invalidations are replayed", || {
        client.metrics().invalidations_waiting == 0
    });
    assert!(client.metrics().invalidations_replayed >= 1);
    assert_eq!(
        owner.client().get(&key).unwrap(),
        None,
        "the delete missed during the freeze reached the owner"
    );
    // Back on its owner at once, long before `dead_timeout`: the ring never changed.
    assert!(owner.client().set(&key, 0, b"owner's", 0).unwrap());
    assert_eq!(&client.get(&key).unwrap().unwrap().data[..], b"owner's");
}

#[test]
fn past_the_bound_the_node_is_flushed_before_it_serves_again() {
    let (owner, other) = (Memcached::start(), Memcached::start());
    let mut config = freezing_config();
    config.max_invalidations = 2;
    let client = Client::connect_to(&[owner.address(), other.address()], config).unwrap();
    let keys: Vec<String> = (0..200)
        .map(|i| format!("k{i}"))
        .filter(|k| client.topology().node_index_for(k) == Some(0))
        .take(5)
        .collect();
    let untouched = key_on(&client, 0) + "-untouched";
    for key in keys.iter().chain([&untouched]) {
        assert!(owner.client().set(key, 0, b"old", 0).unwrap());
    }
    owner.signal("STOP");
    let thaw = Thaw(&owner);
    for key in &keys {
        client.delete(key).unwrap();
    }
    let metrics = client.metrics();
    assert_eq!(metrics.invalidations_dropped, 3, "{metrics:?}");
    assert_eq!(metrics.invalidation_overflows, 1, "{metrics:?}");
    drop(thaw);
    wait_until("the node is flushed and serves again", || {
        client.metrics().invalidation_flushes == 1 && client.metrics().invalidations_waiting == 0
    });
    for key in keys.iter().chain([&untouched]) {
        assert_eq!(owner.client().get(key).unwrap(), None, "{key} survived");
    }
}

#[test]
fn a_large_values_chunks_and_index_on_the_gutter_live_at_most_gutter_ttl() {
    let (owner, other) = (Memcached::start(), Memcached::start());
    let mut config = freezing_config();
    config.max_value_len = 1024;
    config.large_values = Some(elasticache_client::LargeValues::new(1024, 1 << 20));
    let client = Client::connect_to(&[owner.address(), other.address()], config).unwrap();
    let key = key_on(&client, 0);

    owner.signal("STOP");
    let _thaw = Thaw(&owner);
    // Times out on the frozen owner: from now on its keys go to the gutter.
    assert!(!client.delete(&key).unwrap());
    let waiting = client.metrics().invalidations_waiting;
    // 16 chunks of 1 KiB: some are the frozen node's (all 16 on one node: 1 in 65536).
    let value: Vec<u8> = (0..16 * 1024).map(|i| (i % 251) as u8).collect();
    let stored = client.store_large(elasticache_client::Store::Set, &key, 0, &value, 3600);
    assert_eq!(stored.unwrap(), elasticache_client::StoreReply::Stored);
    let read = client
        .get_large(&key)
        .unwrap()
        .expect("read back from the gutter");
    assert_eq!(&read.data[..], &value[..]);

    // The index (`ECLV`, a version byte, the generation) and its chunks' keys.
    let index = other
        .client()
        .get(&key)
        .unwrap()
        .expect("the index is on the gutter");
    let generation = u64::from_le_bytes(index.data[5..13].try_into().unwrap());
    let topology = client.topology();
    let left = |key: &str| match other.client().ttl(key).unwrap() {
        Ttl::Seconds(left) => left,
        ttl => panic!("{key}: {ttl:?}"),
    };
    assert!(left(&key) <= 10, "the index lives at most gutter_ttl");
    let mut diverted = 0;
    for number in 0..16 {
        let chunk = format!("{key}:large:{generation:016x}:{number}");
        let on_other = left(&chunk);
        if topology.node_index_for(&chunk) == Some(0) {
            diverted += 1;
            assert!(
                on_other <= 10,
                "{chunk}: a gutter's chunk lives at most gutter_ttl"
            );
        } else {
            assert!(on_other > 10, "{chunk}: on its owner, the value's timeout");
        }
    }
    assert!(diverted > 0);
    // The item's key is remembered for replay (it already was); its chunks' keys are not.
    assert!(
        client.metrics().invalidations_waiting <= waiting + 1,
        "{:?}",
        client.metrics()
    );
}
