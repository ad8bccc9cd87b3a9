//! Meta-command features against real memcached (get-or-lease, early recompute, TTL, counters
//! created on a miss, delete-if-owner), blocking and event-driven, and their classic fallback
//! against a server that does not know the meta commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Barrier};
use std::thread;

use elasticache_client::{
    lease_key, Client, ClientConfig, Counter, Error, Initial, LeaseRequest, Ttl, LEASE_PREFIX,
    MAX_KEY_LEN,
};
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
                let request = LeaseRequest::new(30, None);
                let token = request.token.clone();
                let leased = client.get_or_lease("cold", request).unwrap();
                assert_eq!(leased.item, None);
                leased.won.then_some(token)
            })
        })
        .collect();
    let winners: Vec<Vec<u8>> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(winners.len(), 1);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(true));
    // The winner stores with `add` (a value written meanwhile stays; a `delete` of the key
    // ends its lease: see `a_delete_during_a_computation_ends_its_lease`), then ends its lease.
    assert!(client.add("cold", 16, b"computed", 0).unwrap());
    assert!(client.release_lease("cold", &winners[0]).unwrap());
    let leased = client
        .get_or_lease("cold", LeaseRequest::new(30, None))
        .unwrap();
    assert!(!leased.won);
    let item = leased.item.unwrap();
    assert_eq!((item.flags, &item.data[..]), (16, &b"computed"[..]));
    // The lease lives on its own key: a plain get of the key never sees a stub.
    client.delete("cold").unwrap();
    assert!(
        client
            .get_or_lease("cold", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    assert_eq!(client.get("cold").unwrap(), None);
}

#[test]
fn early_recompute_is_won_once_while_everyone_keeps_the_value() {
    let server = Memcached::start();
    let client = server.client();
    client.set("hot", 0, b"v1", 100).unwrap();
    let far = client
        .get_or_lease("hot", LeaseRequest::new(30, Some(10)))
        .unwrap();
    assert!(!far.won, "100 s left is not under 10 s");
    let first = client
        .get_or_lease("hot", LeaseRequest::new(30, Some(200)))
        .unwrap();
    let second = client
        .get_or_lease("hot", LeaseRequest::new(30, Some(200)))
        .unwrap();
    assert!(first.won && !second.won);
    assert_eq!(&first.item.unwrap().data[..], b"v1");
    assert_eq!(&second.item.unwrap().data[..], b"v1");
    // A new value starts a new round.
    client.set("hot", 0, b"v2", 100).unwrap();
    assert!(
        client
            .get_or_lease("hot", LeaseRequest::new(30, Some(200)))
            .unwrap()
            .won
    );
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
    let mut lease = client
        .start_get_or_lease("k".to_owned(), LeaseRequest::new(30, None))
        .unwrap();
    drive(&client, &mut lease);
    assert!(lease.finish(&client).unwrap().won);
    let mut lease = client
        .start_get_or_lease("k".to_owned(), LeaseRequest::new(30, None))
        .unwrap();
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
    let first = client
        .get_or_lease("k", LeaseRequest::new(30, Some(5)))
        .unwrap();
    assert!(first.won && first.item.is_none());
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(false));
    let second = client
        .get_or_lease("k", LeaseRequest::new(30, Some(5)))
        .unwrap();
    assert!(!second.won && second.item.is_none());
    let third = client
        .get_or_lease("k", LeaseRequest::new(30, Some(5)))
        .unwrap();
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
            // The lease ended by its owner: `gets` finds this caller's token, `cas` expires it.
            b"VALUE \xfflease:k 0 5 77\r\nmine!\r\nEND\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[server.address()], Default::default()).unwrap();
    let mut request = LeaseRequest::new(30, None);
    request.token = b"mine!".to_vec();
    let leased = client.get_or_lease("k", request).unwrap();
    assert!(!leased.won);
    assert_eq!(&leased.item.unwrap().data[..], b"theirs");
    server.wait_for_replies(6);
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
    assert!(
        client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(false));
    // The node is replaced by a memcached 1.6: the new node is probed, and speaks meta.
    let server = Memcached::start();
    let replacement = elasticache_client::NodeAddress::parse(&server.address()).unwrap();
    client.set_nodes(&[replacement], None);
    assert_eq!(client.topology().nodes()[0].speaks_meta(), None);
    assert!(
        client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    assert_eq!(client.topology().nodes()[0].speaks_meta(), Some(true));
}

#[test]
fn lease_keys_stay_valid_and_distinct() {
    assert_eq!(lease_key("a"), b"\xfflease:a");
    let long_a = "a".repeat(MAX_KEY_LEN);
    let long_b = format!("{}b", "a".repeat(MAX_KEY_LEN - 1));
    for key in [&long_a, &long_b, &"é".repeat(120)] {
        let lease = lease_key(key);
        assert!(lease.len() <= MAX_KEY_LEN, "{}", lease.len());
        assert!(lease.starts_with(LEASE_PREFIX));
        elasticache_client::validate_key(&lease).unwrap();
    }
    assert_ne!(lease_key(&long_a), lease_key(&long_b));
    // No text key is in the leases' name space: it starts with a byte UTF-8 never has.
    assert!(std::str::from_utf8(&lease_key("a")).is_err());
}

#[test]
fn user_keys_named_like_leases_neither_stall_nor_read_nor_lose_anything() {
    let server = Memcached::start();
    let client = server.client();
    // What the lease of `foo` used to be: a user's key now, with no effect on `foo`'s lease.
    client.set("foo:lease", 0, b"user data", 0).unwrap();
    assert!(
        client
            .get_or_lease("foo", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    // While `bar` is leased, `bar:lease` is whatever its user stored there, or nothing.
    let request = LeaseRequest::new(30, None);
    let token = request.token.clone();
    assert!(client.get_or_lease("bar", request).unwrap().won);
    assert_eq!(client.get("bar:lease").unwrap(), None);
    client.set("bar:lease", 0, b"kept", 0).unwrap();
    assert!(client.release_lease("bar", &token).unwrap());
    assert_eq!(&client.get("bar:lease").unwrap().unwrap().data[..], b"kept");
    assert_eq!(
        &client.get("foo:lease").unwrap().unwrap().data[..],
        b"user data"
    );
}

#[test]
fn a_lease_is_released_by_its_owner_only_even_after_it_ran_out() {
    let server = Memcached::start();
    let client = server.client();
    let slow = LeaseRequest::new(1, None);
    let slow_token = slow.token.clone();
    assert!(client.get_or_lease("k", slow).unwrap().won);
    // Someone else's token ends nothing.
    assert!(!client.release_lease("k", b"not the owner").unwrap());
    assert!(
        !client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    // The slow winner's lease runs out (memcached counts whole seconds) and another wins...
    let next = LeaseRequest::new(30, None);
    let next_token = next.token.clone();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let request = next.clone();
    while !client.get_or_lease("k", request.clone()).unwrap().won {
        assert!(
            std::time::Instant::now() < give_up,
            "the 1 s lease never ran out"
        );
        thread::sleep(std::time::Duration::from_millis(50)); // polling the condition, bounded
    }
    // ...whose lease the slow winner's release leaves alone.
    assert!(!client.release_lease("k", &slow_token).unwrap());
    assert!(
        !client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
    assert!(client.release_lease("k", &next_token).unwrap());
    assert!(
        client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap()
            .won
    );
}

#[test]
fn taking_a_lease_skips_the_value_the_caller_cannot_use() {
    let server = Memcached::start();
    let client = server.client();
    client
        .set("k", 1, b"a pickle of a class renamed since", 0)
        .unwrap();
    let bad = client.get("k").unwrap();
    let mut take = LeaseRequest::new(30, None);
    take.take = bad.clone();
    let leased = client.get_or_lease("k", take.clone()).unwrap();
    assert!(leased.won && leased.item.is_none());
    // Taken once: the next taker waits like any other caller.
    let mut other = LeaseRequest::new(30, None);
    other.take = bad;
    assert!(!client.get_or_lease("k", other).unwrap().won);
    assert!(client.release_lease("k", &take.token).unwrap());
}

#[test]
fn a_taker_that_finds_a_new_value_on_its_recheck_ends_its_lease_and_returns_it() {
    // It read a value it cannot use; before its lease was won, another caller stored a new
    // one and ended its own lease.
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"ERROR\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
            b"VALUE k 16 4\r\ngood\r\nEND\r\n".to_vec(),
            b"VALUE \xfflease:k 0 5 77\r\nmine!\r\nEND\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[server.address()], Default::default()).unwrap();
    let mut take = LeaseRequest::new(30, None);
    take.token = b"mine!".to_vec();
    take.take = Some(elasticache_client::Item {
        flags: 1,
        data: bytes::Bytes::from_static(b"bad"),
        cas: None,
    });
    let leased = client.get_or_lease("k", take).unwrap();
    assert!(!leased.won);
    assert_eq!(&leased.item.unwrap().data[..], b"good");
    server.wait_for_replies(5);
}

#[test]
fn locks_never_take_a_failure_for_a_holder_even_under_ignore_exc() {
    let server = Memcached::start();
    let address = server.address();
    drop(server);
    let mut config = ClientConfig::default();
    config.ignore_exc = true;
    let client = Client::connect_to(&[address], config).unwrap();
    // A plain add is a miss under ignore_exc; the lock's acquire and release are errors.
    assert_eq!(
        client
            .store(elasticache_client::Store::Add, "k", 0, b"x", 0)
            .unwrap(),
        elasticache_client::StoreReply::NotStored
    );
    assert!(client.acquire("k", b"token", 60).is_err());
    assert!(client.delete_if("k", b"token").is_err());
}

#[test]
fn a_lock_token_is_stored_as_given_and_taken_once() {
    let server = Memcached::start();
    let client = server.client();
    assert!(client.acquire("lock", b"mine", 60).unwrap());
    assert!(!client.acquire("lock", b"theirs", 60).unwrap());
    let item = client.get("lock").unwrap().unwrap();
    assert_eq!((item.flags, &item.data[..]), (0, &b"mine"[..]));
    assert!(client.delete_if("lock", b"mine").unwrap());
}

#[test]
fn a_counter_that_vanishes_after_a_lost_add_is_created_with_its_initial_value() {
    // incr: missing; add: another client created it; incr: gone again (deleted or evicted);
    // add: stored. The initial value is returned, not "not found".
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"NOT_FOUND\r\n".to_vec(),
            b"NOT_STORED\r\n".to_vec(),
            b"NOT_FOUND\r\n".to_vec(),
            b"STORED\r\n".to_vec(),
        ],
        then_close: false,
    });
    let client = Client::connect_to(&[server.address()], Default::default()).unwrap();
    let value = client
        .count(Counter::Incr, "c", 1, Some(initial(7)))
        .unwrap();
    assert_eq!(value, Some(7));
    server.wait_for_replies(4);
}

#[test]
fn a_delete_during_a_computation_ends_its_lease() {
    let server = Memcached::start();
    let client = server.client();
    for (name, delete) in [
        (
            "delete",
            Box::new(|c: &Client| c.delete("k").map(drop).unwrap()) as Box<dyn Fn(&Client)>,
        ),
        (
            "delete_many",
            Box::new(|c: &Client| c.delete_many(&["k"]).map(drop).unwrap()),
        ),
    ] {
        client.delete("k").unwrap();
        let request = LeaseRequest::new(30, None);
        let token = request.token.clone();
        assert!(client.get_or_lease("k", request).unwrap().won, "{name}");
        delete(&client);
        assert!(
            !client.release_lease("k", &token).unwrap(),
            "{name}: the computation in flight must learn that its lease was ended"
        );
        let next = client
            .get_or_lease("k", LeaseRequest::new(30, None))
            .unwrap();
        assert!(
            next.won || next.item.is_some(),
            "{name}: nobody waits on the ended lease"
        );
    }
}

#[test]
fn a_write_during_a_computation_beats_its_add_and_leaves_the_lease() {
    // A write costs no lease delete: the computation's `add` loses to the value written.
    let server = Memcached::start();
    let client = server.client();
    for (name, write) in [
        (
            "set",
            Box::new(|c: &Client| c.set("k", 0, b"new", 0).map(drop).unwrap())
                as Box<dyn Fn(&Client)>,
        ),
        (
            "set_many",
            Box::new(|c: &Client| c.set_many(&[("k", 0, b"new")], 0).map(drop).unwrap()),
        ),
    ] {
        client.delete("k").unwrap();
        let request = LeaseRequest::new(30, None);
        let token = request.token.clone();
        assert!(client.get_or_lease("k", request).unwrap().won, "{name}");
        write(&client);
        assert!(
            !client.add("k", 0, b"computed", 0).unwrap(),
            "{name}: the write stays"
        );
        assert!(
            client.release_lease("k", &token).unwrap(),
            "{name}: its own lease"
        );
        assert_eq!(
            &client.get("k").unwrap().unwrap().data[..],
            b"new",
            "{name}"
        );
    }
}
