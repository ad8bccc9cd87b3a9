//! Meta-command features against real memcached (get-or-lease, early recompute, TTL, counters
//! created on a miss, delete-if-owner), blocking and event-driven, and their classic fallback
//! against a server that does not know the meta commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Barrier};
use std::thread;

use elasticache_client::{lease_key, Client, Counter, Error, Initial, Ttl, MAX_KEY_LEN};
use support::{drive, FakeServer, Fault, Memcached};

fn initial(value: u64) -> Initial {
    Initial {
        value,
        flags: 2,
        data: value.to_string().into_bytes(),
        exptime: 0,
    }
}

#[test]
fn one_caller_of_many_wins_the_lease_and_the_others_read_its_value_once_stored() {
    let server = Memcached::start();
    let client = Arc::new(server.client());
    let callers = 16;
    let barrier = Arc::new(Barrier::new(callers));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (client, barrier) = (Arc::clone(&client), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                let leased = client.get_or_lease("cold", 30, None).unwrap();
                assert_eq!(leased.item, None);
                usize::from(leased.won)
            })
        })
        .collect();
    let winners: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(winners, 1);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(true));
    assert!(client.set("cold", 16, b"computed", 0).unwrap());
    assert!(client.release_lease("cold").unwrap());
    let leased = client.get_or_lease("cold", 30, None).unwrap();
    assert!(!leased.won);
    let item = leased.item.unwrap();
    assert_eq!((item.flags, &item.data[..]), (16, &b"computed"[..]));
    // The lease lives on its own key: a plain get of the key never sees a stub.
    client.delete("cold").unwrap();
    assert!(client.get_or_lease("cold", 30, None).unwrap().won);
    assert_eq!(client.get("cold").unwrap(), None);
}

#[test]
fn early_recompute_is_won_once_while_everyone_keeps_the_value() {
    let server = Memcached::start();
    let client = server.client();
    client.set("hot", 0, b"v1", 100).unwrap();
    let far = client.get_or_lease("hot", 30, Some(10)).unwrap();
    assert!(!far.won, "100 s left is not under 10 s");
    let first = client.get_or_lease("hot", 30, Some(200)).unwrap();
    let second = client.get_or_lease("hot", 30, Some(200)).unwrap();
    assert!(first.won && !second.won);
    assert_eq!(&first.item.unwrap().data[..], b"v1");
    assert_eq!(&second.item.unwrap().data[..], b"v1");
    // A new value starts a new round.
    client.set("hot", 0, b"v2", 100).unwrap();
    assert!(client.get_or_lease("hot", 30, Some(200)).unwrap().won);
}

#[test]
fn ttl_counters_and_owner_deletes() {
    let server = Memcached::start();
    let client = server.client();
    client.set("forever", 0, b"x", 0).unwrap();
    client.set("brief", 0, b"x", 50).unwrap();
    assert_eq!(client.ttl("forever").unwrap(), Ttl::Forever);
    assert!(matches!(client.ttl("brief").unwrap(), Ttl::Seconds(s) if (1..=50).contains(&s)));
    assert_eq!(client.ttl("absent").unwrap(), Ttl::Missing);

    assert_eq!(client.count(Counter::Incr, "n", 1, None).unwrap(), None);
    let created = client
        .count(Counter::Incr, "n", 1, Some(initial(10)))
        .unwrap();
    assert_eq!(created, Some(10));
    assert_eq!(client.get("n").unwrap().unwrap().flags, 2);
    assert_eq!(
        client
            .count(Counter::Incr, "n", 5, Some(initial(10)))
            .unwrap(),
        Some(15)
    );
    assert_eq!(client.count(Counter::Decr, "n", 20, None).unwrap(), Some(0));

    client.set("lock", 0, b"mine", 0).unwrap();
    assert!(!client.delete_if("lock", b"theirs").unwrap());
    assert!(client.get("lock").unwrap().is_some());
    assert!(client.delete_if("lock", b"mine").unwrap());
    assert_eq!(client.get("lock").unwrap(), None);
    assert!(!client.delete_if("lock", b"mine").unwrap());
}

#[test]
fn concurrent_creations_of_a_counter_count_every_call() {
    let server = Memcached::start();
    let client = Arc::new(server.client());
    let callers = 8;
    let barrier = Arc::new(Barrier::new(callers));
    let threads: Vec<_> = (0..callers)
        .map(|_| {
            let (client, barrier) = (Arc::clone(&client), Arc::clone(&barrier));
            thread::spawn(move || {
                barrier.wait();
                client
                    .count(Counter::Incr, "c", 1, Some(initial(1)))
                    .unwrap()
            })
        })
        .collect();
    let mut seen: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (1..=callers as u64).collect::<Vec<_>>());
}

#[test]
fn event_driven_lease_and_ttl() {
    let server = Memcached::start();
    let client = server.client();
    // Warm the pool: a warm operation never blocks.
    client.set("warm", 0, b"x", 0).unwrap();
    let mut lease = client.start_get_or_lease("k".to_owned(), 30, None).unwrap();
    drive(&client, &mut lease);
    assert!(lease.finish(&client).unwrap().won);
    let mut lease = client.start_get_or_lease("k".to_owned(), 30, None).unwrap();
    drive(&client, &mut lease);
    assert!(!lease.finish(&client).unwrap().won);
    let mut ttl = client.start_ttl("warm".to_owned()).unwrap();
    drive(&client, &mut ttl);
    assert_eq!(ttl.finish(&client).unwrap(), Ttl::Forever);
}

#[test]
fn a_server_without_meta_commands_gets_the_add_based_lease() {
    // A memcached 1.4 as seen on the wire: `ERROR` to `mn`, then the classic exchanges.
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"ERROR\r\n".to_vec(),
            b"END\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
            // The winner reads the key again: still missing.
            b"END\r\n".to_vec(),
            b"END\r\n".to_vec(),
            b"NOT_STORED\r\n".to_vec(),
            b"VALUE k 16 1\r\nv\r\nEND\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[server.address()], Default::default()).unwrap();
    let first = client.get_or_lease("k", 30, Some(5)).unwrap();
    assert!(first.won && first.item.is_none());
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(false));
    let second = client.get_or_lease("k", 30, Some(5)).unwrap();
    assert!(!second.won && second.item.is_none());
    let third = client.get_or_lease("k", 30, Some(5)).unwrap();
    assert!(!third.won);
    assert_eq!(&third.item.unwrap().data[..], b"v");
    // The TTL cannot be read without meta commands: a typed error, nothing sent.
    assert!(matches!(
        client.ttl("k"),
        Err(Error::MetaUnsupported { .. })
    ));
}

#[test]
fn a_winner_that_finds_the_value_stored_meanwhile_ends_its_lease_and_returns_it() {
    // Its miss came just before another winner stored the value and ended its lease.
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"ERROR\r\n".to_vec(),
            b"END\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
            b"VALUE k 16 6\r\ntheirs\r\nEND\r\n".to_vec(),
            b"DELETED\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[server.address()], Default::default()).unwrap();
    let leased = client.get_or_lease("k", 30, None).unwrap();
    assert!(!leased.won);
    assert_eq!(&leased.item.unwrap().data[..], b"theirs");
    server.wait_for_replies(5);
}

#[test]
fn an_early_meta_dialect_gets_the_fallback_and_a_replaced_node_is_probed_again() {
    // memcached 1.6 betas answer meta commands in another dialect (`OK`...): not spoken here.
    let beta = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"OK\r\n".to_vec(),
            b"END\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
            b"END\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[beta.address()], Default::default()).unwrap();
    assert!(client.get_or_lease("k", 30, None).unwrap().won);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(false));
    // The node is replaced by a memcached 1.6: the new node is probed, and speaks meta.
    let server = Memcached::start();
    let replacement = elasticache_client::NodeAddress::parse(&server.address()).unwrap();
    client.set_nodes(&[replacement], None);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), None);
    assert!(client.get_or_lease("k", 30, None).unwrap().won);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(true));
}

#[test]
fn lease_keys_stay_valid_and_distinct() {
    assert_eq!(lease_key("a"), "a:lease");
    let long_a = "a".repeat(MAX_KEY_LEN);
    let long_b = format!("{}b", "a".repeat(MAX_KEY_LEN - 1));
    for key in [&long_a, &long_b, &"é".repeat(120)] {
        let lease = lease_key(key);
        assert!(lease.len() <= MAX_KEY_LEN, "{}", lease.len());
        elasticache_client::validate_key(lease.as_bytes()).unwrap();
    }
    assert_ne!(lease_key(&long_a), lease_key(&long_b));
}
