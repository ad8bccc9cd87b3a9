//! Values many times larger than a connection's read buffer, against a real memcached started
//! with a larger item size: the buffer grows with the data as it arrives and reads them whole.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use elasticache_client::{Client, ClientConfig, MAX_VALUE_LEN_LIMIT};
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
