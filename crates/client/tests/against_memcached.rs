//! The client against real memcached processes on random ports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use elasticache_client::{Client, ClientConfig, Error, ErrorKind, Ring, Store, StoreReply};
use support::Memcached;

fn cluster(n: usize) -> (Vec<Memcached>, Client) {
    let nodes: Vec<Memcached> = (0..n).map(|_| Memcached::start()).collect();
    let addresses: Vec<String> = nodes.iter().map(Memcached::address).collect();
    let client = Client::connect_to(&addresses, ClientConfig::default()).unwrap();
    (nodes, client)
}

#[test]
fn single_key_commands() {
    let (_nodes, client) = cluster(1);
    assert_eq!(client.get("missing").unwrap(), None);
    assert!(client.set("k", 16, b"v\r\nEND\r\n", 0).unwrap());
    let item = client.get("k").unwrap().unwrap();
    assert_eq!((item.flags, &item.data[..]), (16, &b"v\r\nEND\r\n"[..]));
    assert!(!client.add("k", 0, b"other", 0).unwrap());
    assert!(client.add("fresh", 0, b"x", 0).unwrap());
    assert_eq!(
        client.store(Store::Append, "fresh", 0, b"y", 0).unwrap(),
        StoreReply::Stored
    );
    assert_eq!(
        client.store(Store::Prepend, "fresh", 0, b"w", 0).unwrap(),
        StoreReply::Stored
    );
    assert_eq!(client.get("fresh").unwrap().unwrap().data, &b"wxy"[..]);
    assert_eq!(
        client.store(Store::Replace, "nothing", 0, b"x", 0).unwrap(),
        StoreReply::NotStored
    );
    let cas = client.gets("fresh").unwrap().unwrap().cas.unwrap();
    assert_eq!(
        client
            .store(Store::Cas(cas + 1), "fresh", 0, b"z", 0)
            .unwrap(),
        StoreReply::Exists
    );
    assert_eq!(
        client.store(Store::Cas(cas), "fresh", 0, b"z", 0).unwrap(),
        StoreReply::Stored
    );
    assert!(client.delete("fresh").unwrap());
    assert!(!client.delete("fresh").unwrap());
    assert!(client.set("n", 2, b"10", 0).unwrap());
    assert_eq!(client.incr("n", 5).unwrap(), Some(15));
    assert_eq!(client.decr("n", 100).unwrap(), Some(0));
    assert_eq!(client.incr("absent", 1).unwrap(), None);
    assert!(client.touch("n", 100).unwrap());
    assert!(!client.touch("absent", 100).unwrap());
    assert!(client.set("gone", 0, b"x", -1).unwrap());
    assert_eq!(client.get("gone").unwrap(), None);
    client.flush_all().unwrap();
    assert_eq!(client.get("k").unwrap(), None);
}

#[test]
fn every_key_lands_on_its_rendezvous_node_and_batches_span_nodes() {
    let (nodes, client) = cluster(3);
    let keys: Vec<String> = (0..200).map(|i| format!(":1:key-{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| format!("value of {k}").into_bytes())
        .collect();
    let items: Vec<(&str, u32, &[u8])> = key_refs
        .iter()
        .zip(&values)
        .map(|(k, v)| (*k, 0, v.as_slice()))
        .collect();
    assert_eq!(client.set_many(&items, 0).unwrap(), Vec::<usize>::new());

    let names: Vec<String> = nodes.iter().map(Memcached::address).collect();
    let ring = Ring::new(names.iter().map(String::as_str));
    let singles: Vec<Client> = nodes.iter().map(Memcached::client).collect();
    for (key, value) in key_refs.iter().zip(&values) {
        let owner = ring.node_for(key).unwrap();
        for (index, single) in singles.iter().enumerate() {
            let found = single.get(key).unwrap().map(|i| i.data.to_vec());
            assert_eq!(
                found.as_ref(),
                (index == owner).then_some(value),
                "{key} on node {index}"
            );
        }
    }

    let mut asked = key_refs.clone();
    asked.push("never-set");
    asked.push(key_refs[0]); // a duplicate still gets its value
    let found = client.get_many(&asked).unwrap();
    for (i, key) in asked.iter().enumerate() {
        let expected = keys
            .iter()
            .position(|k| k == key)
            .map(|p| values[p].clone());
        assert_eq!(
            found[i].as_ref().map(|item| item.data.to_vec()),
            expected,
            "{key}"
        );
    }
    assert_eq!(client.delete_many(&key_refs[..50]).unwrap(), 50);
    assert!(client
        .get_many(&key_refs[..50])
        .unwrap()
        .iter()
        .all(Option::is_none));
    assert!(client
        .get_many(&key_refs[50..])
        .unwrap()
        .iter()
        .all(Option::is_some));
}

#[test]
fn large_values_round_trip_and_oversized_ones_remove_the_old_value() {
    let (_nodes, client) = cluster(1);
    let large: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
    assert!(client.set("large", 0, &large, 0).unwrap());
    assert_eq!(client.get("large").unwrap().unwrap().data, large);

    assert!(client.set("large", 0, b"small", 0).unwrap());
    let over_server_limit = vec![b'a'; 1024 * 1024 + 1];
    let error = client.set("large", 0, &over_server_limit, 0).unwrap_err();
    assert!(matches!(error, Error::TooLargeForNode { .. }), "{error}");
    assert_eq!(
        client.get("large").unwrap(),
        None,
        "the old value must not survive a failed set"
    );

    assert!(client.set("large", 0, b"small", 0).unwrap());
    let over_client_limit = vec![b'a'; client.config().max_value_len + 1];
    assert!(matches!(
        client.set("large", 0, &over_client_limit, 0),
        Err(Error::ValueTooLarge { .. })
    ));
    assert_eq!(client.get("large").unwrap(), None);
}

#[test]
fn a_refused_item_in_a_batch_leaves_the_rest_stored_and_loses_its_old_value() {
    let (_nodes, client) = cluster(1);
    let items: Vec<(&str, u32, &[u8])> = vec![("b", 0, b"old"), ("d", 0, b"old")];
    assert_eq!(client.set_many(&items, 0).unwrap(), Vec::<usize>::new());
    // Over memcached's item limit (refused by the server) and over ours (never sent).
    let big = vec![b'a'; 1024 * 1024 + 10];
    let huge = vec![b'a'; client.config().max_value_len + 1];
    let items: Vec<(&str, u32, &[u8])> = vec![
        ("a", 0, b"1"),
        ("b", 0, &big),
        ("c", 0, b"3"),
        ("d", 0, &huge),
    ];
    assert_eq!(client.set_many(&items, 0).unwrap(), vec![1, 3]);
    let found = client.get_many(&["a", "b", "c", "d"]).unwrap();
    assert_eq!(
        found.iter().map(Option::is_some).collect::<Vec<_>>(),
        vec![true, false, true, false]
    );
}

#[test]
fn invalid_keys_are_refused_before_anything_is_sent() {
    let (node, client) = {
        let node = Memcached::start();
        let client = node.client();
        (node, client)
    };
    for key in ["", "has space", "crlf\r\nflush_all", "tab\t", "nul\0"] {
        let error = client.get(key).unwrap_err();
        assert!(
            matches!(error, Error::InvalidKey { .. }),
            "{key:?}: {error}"
        );
        assert_eq!(error.kind(), ErrorKind::Client);
    }
    let long = "k".repeat(251);
    assert!(matches!(
        client.set(&long, 0, b"v", 0),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        client.get_many(&["ok", "not ok"]),
        Err(Error::InvalidKey { .. })
    ));
    assert_eq!(node.stat("cmd_get") + node.stat("cmd_set"), 0);
}

#[test]
fn the_pool_bounds_connections_and_reuses_them() {
    let node = Memcached::start();
    // Eight threads share two connections: a generous timeout, so that a loaded machine's
    // scheduling cannot turn a wait for the pool into a failure (this test is about the bound).
    let config = {
        let mut custom = ClientConfig::default();
        custom.max_pool_size = 2;
        custom.timeout = Some(Duration::from_secs(30));
        custom
    };
    let client = Arc::new(Client::connect_to(&[node.address()], config).unwrap());
    let baseline = node.stat("total_connections");
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let client = Arc::clone(&client);
            thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("t{t}-{i}");
                    assert!(client.set(&key, 0, key.as_bytes(), 0).unwrap());
                    assert_eq!(client.get(&key).unwrap().unwrap().data, key.as_bytes());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    // Each stat() opens a connection of its own: the final one counts once.
    let opened = node.stat("total_connections") - baseline - 1;
    assert!(
        opened <= 2,
        "{opened} connections opened with max_pool_size 2"
    );
    assert_eq!(
        client.topology().nodes()[0].open_connections(),
        opened as usize
    );
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let node = Memcached::start();
    let config = {
        let mut custom = ClientConfig::default();
        custom.pool_idle_timeout = Some(Duration::ZERO);
        custom
    };
    let client = Client::connect_to(&[node.address()], config).unwrap();
    let baseline = node.stat("total_connections");
    client.set("a", 0, b"1", 0).unwrap();
    client.set("a", 0, b"1", 0).unwrap();
    assert_eq!(
        node.stat("total_connections") - baseline - 1,
        2,
        "an expired idle connection is not reused"
    );
}

#[test]
fn a_batch_of_long_keys_is_sent_as_several_get_lines() {
    let (node, client) = {
        let node = Memcached::start();
        let client = node.client();
        (node, client)
    };
    let keys: Vec<String> = (0..500).map(|i| format!("{i:0>240}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, u32, &[u8])> = refs.iter().map(|k| (*k, 0, k.as_bytes())).collect();
    assert!(client.set_many(&items, 0).unwrap().is_empty());
    let found = client.get_many(&refs).unwrap();
    for (key, item) in refs.iter().zip(&found) {
        assert_eq!(item.as_ref().unwrap().data, key.as_bytes());
    }
    // 500 keys of 241 bytes need at least 8 lines of at most 16 KB.
    assert!(
        node.stat("cmd_get") >= 8,
        "{} get commands",
        node.stat("cmd_get")
    );
}
