//! Values many times larger than a connection's read buffer, against a real memcached started
//! with a larger item size: the buffer grows with the data as it arrives and reads them whole.
//! And values over memcached's default item size, with `large_values`: chunks plus an index.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use elasticache_client::{
    Client, ClientConfig, KeyList, LargeValues, Progress, Store, StoreReply, Ttl, LARGE_FLAG,
    MAX_VALUE_LEN_LIMIT,
};
use support::Memcached;

const MIB: usize = 1024 * 1024;

#[test]
fn values_of_a_mebibyte_and_more_read_back_whole() {
    let node = Memcached::start_with(&["-I", "4m"]);
    let config = {
        let mut custom = ClientConfig::default();
        custom.max_value_len = 4 * MIB;
        custom
    };
    let client = Client::connect_to(&[node.address()], config).unwrap();
    let value = |len: usize, seed: u32| -> Vec<u8> {
        (0..len as u32).map(|i| ((i ^ seed) % 251) as u8).collect()
    };
    let one = value(MIB, 1);
    let three = value(3 * MIB, 7);
    assert!(client.set("one", 0, &one, 0).unwrap());
    assert!(client.set("three", 0, &three, 0).unwrap());
    // One at a time, on the same pooled connection, so a buffer grown for one value and then
    // trimmed serves the next.
    for _ in 0..2 {
        assert_eq!(client.get("one").unwrap().unwrap().data, one);
        assert_eq!(client.get("three").unwrap().unwrap().data, three);
    }
    let both = client.get_many(&["three", "missing", "one"]).unwrap();
    assert_eq!(both[0].as_ref().unwrap().data, three);
    assert!(both[1].is_none());
    assert_eq!(both[2].as_ref().unwrap().data, one);
}

#[test]
fn no_setting_raises_the_value_limit_past_the_protocols() {
    let config = {
        let mut custom = ClientConfig::default();
        custom.max_value_len = usize::MAX;
        custom
    };
    let client = Client::connect_to(&["127.0.0.1:11211"], config).unwrap();
    assert_eq!(client.config().max_value_len, MAX_VALUE_LEN_LIMIT);
}

/// A client of `nodes` with `large_values` on (chunks of at most 1 MiB - 1 KiB).
fn chunking_client(nodes: &[Memcached]) -> Client {
    let mut config = ClientConfig::default();
    config.large_values = Some(LargeValues::new(config.max_value_len, 8 * MIB));
    let addresses: Vec<String> = nodes.iter().map(Memcached::address).collect();
    Client::connect_to(&addresses, config).unwrap()
}

#[test]
fn chunked_values_cross_the_default_item_size_spread_over_the_nodes() {
    let nodes = [Memcached::start(), Memcached::start(), Memcached::start()];
    let client = chunking_client(&nodes);
    let five: Vec<u8> = (0..5 * MIB as u32).map(|i| (i % 253) as u8).collect();
    let two: Vec<u8> = five[..2 * MIB + 3].to_vec();
    assert!(client.chunks(five.len()) && !client.chunks(1000));
    assert_eq!(
        client
            .store_large(Store::Set, "five", 16, &five, 0)
            .unwrap(),
        StoreReply::Stored
    );
    let read = client.get_large("five").unwrap().unwrap();
    assert_eq!((read.flags, &read.data[..]), (16, &five[..]));
    // The index alone, as a reader that does not join sees it.
    let index = client.get("five").unwrap().unwrap();
    assert_eq!((index.flags, index.data.len()), (LARGE_FLAG, 33));
    // Six chunks, each on the node its own key routes to (the index's generation names them):
    // spread over the nodes as any keys are, not all on the index's node.
    let generation = u64::from_le_bytes(index.data[5..13].try_into().unwrap());
    let topology = client.topology();
    for number in 0..6 {
        let chunk = format!("five:large:{generation:016x}:{number}");
        let owner = topology.node_index_for(&chunk).unwrap();
        let held = nodes[owner].client().get(&chunk).unwrap();
        assert!(
            held.is_some(),
            "{chunk} is not on the node its key routes to"
        );
    }
    assert_eq!(
        nodes
            .iter()
            .map(|node| node.stat("curr_items"))
            .sum::<u64>(),
        7,
        "the index and its six chunks"
    );

    let not_stored = client
        .set_many(
            &[
                ("small", 2, b"7"),
                ("two", 0, &two),
                ("over", 0, &five[..]),
                ("five", 1, b"x"),
            ],
            0,
        )
        .unwrap();
    assert_eq!(not_stored, Vec::<usize>::new());
    let found = client
        .get_many(&["two", "missing", "small", "five", "two"])
        .unwrap();
    let data = |at: usize| {
        found[at]
            .as_ref()
            .map(|item| (item.flags, item.data.to_vec()))
    };
    assert_eq!(data(0), Some((0, two.clone())));
    assert_eq!(data(1), None);
    assert_eq!(data(2), Some((2, b"7".to_vec())));
    assert_eq!(
        data(3),
        Some((1, b"x".to_vec())),
        "an overwrite with a small value"
    );
    assert_eq!(data(4), Some((0, two.clone())));

    // The same batch for an event driver: the chunks' round may need connections of its own.
    let mut keys = KeyList::with_capacity(2);
    keys.push("over");
    keys.push("small");
    let mut operation = client.start_get_many(keys).unwrap();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        match operation.advance(&client) {
            Progress::Done => break,
            Progress::Block => operation.prepare(&client),
            _ => {
                assert!(Instant::now() < give_up, "no reply in time");
                std::thread::yield_now();
            }
        }
    }
    let items = operation.finish(&client).unwrap();
    let mut seen = Vec::new();
    items
        .try_for_each(|position, _, data| {
            seen.push((position, data.len()));
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(seen, vec![(0, five.len()), (1, 1)]);
}

#[test]
fn a_value_over_the_large_bound_is_refused_and_a_set_deletes_the_old_one() {
    let nodes = [Memcached::start()];
    let client = chunking_client(&nodes);
    assert!(client.set("bounded", 0, b"old", 0).unwrap());
    let over = vec![1_u8; 8 * MIB + 1];
    let error = client
        .store_large(Store::Set, "bounded", 0, &over, 0)
        .unwrap_err();
    assert!(error.is_value_too_large(), "{error}");
    assert!(client.get_large("bounded").unwrap().is_none());
    assert_eq!(nodes[0].stat("total_items"), 1, "no chunk was stored");
    let error = client
        .store_large(Store::Add, "bounded", 0, &over, 0)
        .unwrap_err();
    assert!(error.is_value_too_large(), "{error}");
}

#[test]
fn a_chunk_gone_reads_as_a_miss_and_without_large_values_an_index_too() {
    let nodes = [Memcached::start(), Memcached::start()];
    let client = chunking_client(&nodes);
    let value = vec![9_u8; 3 * MIB];
    client
        .store_large(Store::Set, "holed", 0, &value, 0)
        .unwrap();
    assert!(client.get_large("holed").unwrap().is_some());
    let index = client.get("holed").unwrap().unwrap();
    let generation = u64::from_le_bytes(index.data[5..13].try_into().unwrap());
    assert!(client
        .delete(&format!("holed:large:{generation:016x}:2"))
        .unwrap());
    assert!(client.get_large("holed").unwrap().is_none());
    assert_eq!(client.get_many(&["holed"]).unwrap(), vec![None]);

    client
        .store_large(Store::Set, "whole", 0, &value, 0)
        .unwrap();
    let addresses: Vec<String> = nodes.iter().map(Memcached::address).collect();
    let plain = Client::connect_to(&addresses, ClientConfig::default()).unwrap();
    assert_eq!(plain.get_many(&["whole"]).unwrap(), vec![None]);
    assert!(plain.get_large("whole").unwrap().is_none());
}

#[test]
fn touch_large_moves_the_chunks_expiry_with_the_index() {
    let nodes = [Memcached::start(), Memcached::start()];
    let client = chunking_client(&nodes);
    client
        .store_large(Store::Set, "touched", 0, &vec![3_u8; 3 * MIB], 300)
        .unwrap();
    let index = client.get("touched").unwrap().unwrap();
    let generation = u64::from_le_bytes(index.data[5..13].try_into().unwrap());
    assert!(client.touch_large("touched", 3000).unwrap());
    for key in (0..4)
        .map(|n| format!("touched:large:{generation:016x}:{n}"))
        .chain(["touched".to_owned()])
    {
        match client.ttl(&key).unwrap() {
            Ttl::Seconds(left) => assert!(left > 300, "{key}: {left}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(!client.touch_large("missing", 3000).unwrap());
    assert!(client.set("small", 0, b"v", 0).unwrap());
    assert!(client.touch_large("small", 3000).unwrap());
}
