//! Warm scale-out and migration between clusters, against real memcached processes: a miss on
//! a moved key reads its previous owner (or the `migrate_from` cluster) and copies the value
//! with its remaining TTL; writes and deletes reach both, so no deleted value comes back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use elasticache_client::{
    Client, ClientConfig, Event, EventSink, Hashing, LeaseRequest, MigrateFrom, NodeAddress,
    Operation, Progress, Ttl,
};
use support::Memcached;

fn address(node: &Memcached) -> NodeAddress {
    NodeAddress::parse(&node.address()).unwrap()
}

/// Keys `client` places on node `index` (of its membership), `count` of them.
fn keys_on(client: &Client, index: usize, count: usize) -> Vec<String> {
    let topology = client.topology();
    (0..)
        .map(|i| format!("moved-{i}"))
        .filter(|key| topology.node_index_for(key) == Some(index))
        .take(count)
        .collect()
}

/// A client of `a` and `b`, with keys written there, then told that `c` joined: the keys
/// that now belong to `c`, each with the value written.
fn scaled_out(
    a: &Memcached,
    b: &Memcached,
    c: &Memcached,
    config: ClientConfig,
) -> (Client, Vec<String>) {
    let client = Client::new(&[address(a), address(b)], config);
    let mut grown = Client::new(
        &[address(a), address(b), address(c)],
        ClientConfig::default(),
    );
    let moved = keys_on(&grown, 2, 20);
    for key in &moved {
        assert!(client.set(key, 7, key.as_bytes(), 300).unwrap());
    }
    client.set_nodes(&[address(a), address(b), address(c)], None);
    grown = c.client();
    for key in &moved {
        assert_eq!(
            grown.get(key).unwrap(),
            None,
            "{key} is not on the new node yet"
        );
    }
    (client, moved)
}

#[test]
fn a_moved_key_is_read_from_its_previous_owner_and_copied_with_its_ttl() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut config = ClientConfig::default();
    let heard = Arc::clone(&events);
    config.events = Some(EventSink::new(move |e| {
        heard.lock().unwrap().push(e.clone())
    }));
    let (client, moved) = scaled_out(&a, &b, &c, config);
    assert!(events.lock().unwrap().iter().any(
        |e| matches!(e, Event::WarmupStarted { window } if *window == Duration::from_secs(60))
    ));
    let key = &moved[0];
    let item = client
        .get(key)
        .unwrap()
        .expect("read from the previous owner");
    assert_eq!((item.flags, &item.data[..]), (7, key.as_bytes()));
    // Copied: the new node holds it, with the TTL it had left.
    let new_node = c.client();
    assert_eq!(
        &new_node.get(key).unwrap().unwrap().data[..],
        key.as_bytes()
    );
    match new_node.ttl(key).unwrap() {
        Ttl::Seconds(left) => assert!((1..=300).contains(&left), "{left}"),
        other => panic!("the copy has no TTL: {other:?}"),
    }
    let metrics = client.metrics();
    assert_eq!(
        (
            metrics.warmup_reads,
            metrics.warmup_hits,
            metrics.warmup_copies
        ),
        (1, 1, 1)
    );
    // The next read finds it on its owner: no second detour.
    assert!(client.get(key).unwrap().is_some());
    assert_eq!(client.metrics().warmup_reads, 1);
}

#[test]
fn get_many_reads_every_moved_miss_in_one_round_and_copies_them() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let (client, moved) = scaled_out(&a, &b, &c, ClientConfig::default());
    let mut keys: Vec<&str> = moved.iter().map(String::as_str).collect();
    keys.push("never-written");
    let found = client.get_many(&keys).unwrap();
    for (key, item) in keys.iter().zip(&found) {
        match *key {
            "never-written" => assert!(item.is_none()),
            key => assert_eq!(&item.as_ref().unwrap().data[..], key.as_bytes()),
        }
    }
    let new_node = c.client();
    let copied = new_node.get_many(&keys[..moved.len()]).unwrap();
    assert!(copied.iter().all(Option::is_some));
    assert_eq!(client.metrics().warmup_copies, moved.len() as u64);
}

#[test]
fn a_delete_in_the_window_reaches_the_previous_owner_so_nothing_comes_back() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let (client, moved) = scaled_out(&a, &b, &c, ClientConfig::default());
    let (deleted, rewritten) = (&moved[0], &moved[1]);
    client.delete(deleted).unwrap();
    assert_eq!(client.get(deleted).unwrap(), None);
    assert_eq!(client.get_many(&[deleted.as_str()]).unwrap(), vec![None]);
    // A set goes to the new owner and deletes the previous owner's copy.
    assert!(client.set(rewritten, 0, b"new", 300).unwrap());
    let old = Client::new(&[address(&a), address(&b)], ClientConfig::default());
    assert_eq!(old.get(rewritten).unwrap(), None);
    assert_eq!(old.get(deleted).unwrap(), None);
    assert_eq!(&client.get(rewritten).unwrap().unwrap().data[..], b"new");
    assert!(client.metrics().detour_deletes >= 2);
}

#[test]
fn a_get_or_lease_winner_finds_the_moved_value_and_computes_nothing() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let (client, moved) = scaled_out(&a, &b, &c, ClientConfig::default());
    let leased = client
        .get_or_lease(&moved[0], LeaseRequest::new(10, None))
        .unwrap();
    assert_eq!(&leased.item.unwrap().data[..], moved[0].as_bytes());
    assert!(!leased.won, "a value found is not computed");
    // The lease is ended: a delete, then a miss, wins a new one at once.
    client.delete(&moved[0]).unwrap();
    let again = client
        .get_or_lease(&moved[0], LeaseRequest::new(10, None))
        .unwrap();
    assert!(again.item.is_none() && again.won);
}

#[test]
fn an_event_driven_get_takes_the_same_detour() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let (client, moved) = scaled_out(&a, &b, &c, ClientConfig::default());
    let mut operation = client.start_get(moved[0].clone()).unwrap();
    drive(&client, &mut operation);
    let item = operation.finish(&client).unwrap().unwrap();
    assert_eq!(&item.data[..], moved[0].as_bytes());
    assert!(c.client().get(&moved[0]).unwrap().is_some());
}

#[test]
fn with_warm_up_off_a_moved_key_is_a_miss() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let mut config = ClientConfig::default();
    config.warmup_window = Duration::ZERO;
    let (client, moved) = scaled_out(&a, &b, &c, config);
    assert_eq!(client.get(&moved[0]).unwrap(), None);
    assert_eq!(client.metrics().warmup_reads, 0);
}

/// An event loop's steps, with the blocking step run in place.
fn drive<C: elasticache_client::Command>(client: &Client, operation: &mut Operation<C>) {
    for _ in 0..1_000_000 {
        match operation.advance(client) {
            Progress::Done => return,
            Progress::Block => operation.prepare(client),
            _ => std::thread::yield_now(),
        }
    }
    panic!("the operation never ended");
}

/// A client of `new`, migrating from `old` (placed by ketama there).
fn migrating(old: &[&Memcached], new: &Memcached) -> Client {
    let mut config = ClientConfig::default();
    let servers = old.iter().map(|n| address(n)).collect();
    config.migrate_from = Some(MigrateFrom::new(servers, Hashing::Ketama, None));
    Client::new(&[address(new)], config)
}

fn old_cluster(old: &[&Memcached]) -> Client {
    let mut config = ClientConfig::default();
    config.hashing = Hashing::Ketama;
    Client::new(&old.iter().map(|n| address(n)).collect::<Vec<_>>(), config)
}

#[test]
fn a_migrating_client_reads_through_the_old_cluster_and_copies() {
    let (a, b, new) = (Memcached::start(), Memcached::start(), Memcached::start());
    let old = old_cluster(&[&a, &b]);
    for i in 0..10 {
        old.set(&format!("old-{i}"), 1, b"old", 120).unwrap();
    }
    let client = migrating(&[&a, &b], &new);
    client.set("fresh", 0, b"fresh", 0).unwrap();
    let keys = ["old-0", "fresh", "old-1", "missing-everywhere"];
    let found = client.get_many(&keys).unwrap();
    let data: Vec<Option<&[u8]>> = found
        .iter()
        .map(|item| item.as_ref().map(|i| &i.data[..]))
        .collect();
    assert_eq!(
        data,
        vec![
            Some(&b"old"[..]),
            Some(&b"fresh"[..]),
            Some(&b"old"[..]),
            None
        ]
    );
    assert!(new.client().get("old-0").unwrap().is_some(), "copied");
    assert_eq!(&client.get("old-2").unwrap().unwrap().data[..], b"old");
    let metrics = client.metrics();
    assert_eq!((metrics.migration_hits, metrics.migration_copies), (3, 3));
    assert_eq!(
        metrics.migration_reads, 4,
        "three hits and one miss everywhere"
    );
}

#[test]
fn writes_and_deletes_on_the_new_cluster_leave_no_stale_copy_in_the_old() {
    let (a, b, new) = (Memcached::start(), Memcached::start(), Memcached::start());
    let old = old_cluster(&[&a, &b]);
    for key in ["deleted", "rewritten", "batch-1", "batch-2"] {
        old.set(key, 0, b"old", 0).unwrap();
    }
    let client = migrating(&[&a, &b], &new);
    client.delete("deleted").unwrap();
    assert!(client.set("rewritten", 0, b"new", 0).unwrap());
    client.delete_many(&["batch-1"]).unwrap();
    assert!(client
        .set_many(&[("batch-2", 0, &b"new"[..])], 0)
        .unwrap()
        .is_empty());
    for key in ["deleted", "rewritten", "batch-1", "batch-2"] {
        assert_eq!(
            old.get(key).unwrap(),
            None,
            "{key} is gone from the old cluster"
        );
    }
    assert_eq!(client.get("deleted").unwrap(), None);
    assert_eq!(client.get("batch-1").unwrap(), None);
    assert_eq!(&client.get("rewritten").unwrap().unwrap().data[..], b"new");
}

#[test]
fn an_unreachable_old_cluster_is_a_miss_not_a_failure() {
    let new = Memcached::start();
    let mut config = ClientConfig::default();
    let gone = NodeAddress::parse(&format!("127.0.0.1:{}", support::free_port())).unwrap();
    config.migrate_from = Some(MigrateFrom::new(vec![gone], Hashing::Pymemcache, None));
    let client = Client::new(&[address(&new)], config);
    assert_eq!(client.get("anything").unwrap(), None);
    client.delete("anything").unwrap();
    assert!(client.set("anything", 0, b"v", 0).unwrap());
}

#[test]
fn a_key_written_while_the_old_clusters_membership_is_unknown_is_never_read_through() {
    use elasticache_client::{DiscoveryConfig, DiscoveryMode};
    use support::{member, Endpoint, FakeEndpoint};

    let old_node = Memcached::start();
    let old = old_node.client();
    old.set("written", 0, b"stale", 0).unwrap();
    old.set("untouched", 0, b"old", 0).unwrap();
    let endpoint = FakeEndpoint::start(Endpoint::Garbage);
    let mut discovery = DiscoveryConfig::default();
    discovery.mode = DiscoveryMode::On;
    let mut config = ClientConfig::default();
    config.migrate_from = Some(MigrateFrom::new(
        vec![NodeAddress::parse(&endpoint.address()).unwrap()],
        Hashing::Pymemcache,
        Some(discovery),
    ));
    let new = Memcached::start();
    let client = Client::new(&[address(&new)], config);
    // The old cluster cannot be asked for its nodes: the delete reaches the new cluster only.
    client.delete("written").unwrap();
    assert_eq!(client.metrics().detour_delete_failures, 1);
    endpoint.set(Endpoint::Cluster {
        version: 1,
        members: vec![member(&old_node)],
    });
    // A refresh now (the failed discoveries are otherwise retried about once a second).
    let source = client.migration_source().unwrap();
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while source.topology().nodes().is_empty() {
        let _ = source.refresh_membership();
        assert!(
            std::time::Instant::now() < give_up,
            "the old cluster's membership was never discovered"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling interval, not synchronisation
    }
    // Known now: the copy the delete missed is not read, the other keys are.
    assert_eq!(client.get("written").unwrap(), None);
    assert_eq!(&client.get("untouched").unwrap().unwrap().data[..], b"old");
    // A write that reaches it lets it be read through again (there is nothing left to read).
    client.delete("written").unwrap();
    assert_eq!(old.get("written").unwrap(), None);
}

#[test]
fn a_delete_the_previous_owner_missed_keeps_the_key_from_being_read_there() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let mut config = ClientConfig::default();
    config.timeout = Some(Duration::from_millis(200));
    let (client, moved) = scaled_out(&a, &b, &c, config);
    let key = &moved[0];
    let (previous, other) = if a.client().get(key).unwrap().is_some() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Frozen, the previous owner does not answer the delete in time: the client cannot know
    // whether it was done (here it is, once the node resumes: the copy is put back to stand
    // for one that was not).
    previous.signal("STOP");
    let deleted = client.delete(key);
    previous.signal("CONT");
    assert!(
        deleted.is_ok(),
        "the owner's delete is done all the same: {deleted:?}"
    );
    assert!(client.metrics().detour_delete_failures >= 1);
    assert!(previous.client().set(key, 0, b"stale", 0).unwrap());
    // It is never read through.
    assert_eq!(client.get(key).unwrap(), None);
    assert_eq!(client.get_many(&[key.as_str()]).unwrap(), vec![None]);
    assert_eq!(client.metrics().warmup_reads, 0);
    // Moved keys of the other previous owner still are (the frozen one is left alone for
    // `retry_timeout` after its failure).
    let elsewhere = moved
        .iter()
        .find(|k| other.client().get(k).unwrap().is_some())
        .expect("a moved key from each previous owner");
    assert!(client.get(elsewhere).unwrap().is_some());
}

#[test]
fn an_event_driven_write_whose_detour_times_out_still_writes_the_owner() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let mut config = ClientConfig::default();
    config.timeout = Some(Duration::from_millis(200));
    let (client, moved) = scaled_out(&a, &b, &c, config);
    let key = &moved[0];
    let previous = if a.client().get(key).unwrap().is_some() {
        &a
    } else {
        &b
    };
    previous.signal("STOP");
    let mut operation = client
        .start_store(
            elasticache_client::Store::Set,
            key.clone(),
            0,
            b"new".to_vec(),
            0,
        )
        .unwrap();
    drive(&client, &mut operation);
    let stored = operation.finish(&client);
    previous.signal("CONT");
    assert_eq!(stored.unwrap(), elasticache_client::StoreReply::Stored);
    assert_eq!(&c.client().get(key).unwrap().unwrap().data[..], b"new");
}

/// The port of the peer of socket `fd`.
#[cfg(unix)]
fn peer_port(fd: std::os::fd::RawFd) -> Option<u16> {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` is the operation's open socket for the duration of this call; wrapped
    // without taking ownership (never closed here).
    let stream = std::mem::ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    stream.peer_addr().ok().map(|address| address.port())
}

/// Advances `operation` until it waits on a socket connected to `node`.
#[cfg(unix)]
fn advance_until_waiting_on<C: elasticache_client::Command>(
    client: &Client,
    operation: &mut Operation<C>,
    node: &Memcached,
) {
    for _ in 0..1_000_000 {
        match operation.advance(client) {
            Progress::Done => panic!("the operation ended without waiting on {}", node.port),
            Progress::Block => operation.prepare(client),
            _ => {
                if operation
                    .waits()
                    .any(|(fd, _)| peer_port(fd) == Some(node.port))
                {
                    return;
                }
                std::thread::yield_now();
            }
        }
    }
    panic!("the operation never waited on {}", node.port);
}

#[test]
#[cfg(unix)]
fn a_read_through_probe_answered_after_another_caller_learned_the_nodes_support_reads_right() {
    let (old_node, new) = (Memcached::start(), Memcached::start());
    let old = old_cluster(&[&old_node]);
    old.set("first", 0, b"one", 120).unwrap();
    old.set("second", 0, b"two", 120).unwrap();
    let client = migrating(&[&old_node], &new);
    // Frozen, the old node holds the first read's probe (its support is not known yet) unanswered.
    old_node.signal("STOP");
    let mut first = client.start_get("first".to_owned()).unwrap();
    advance_until_waiting_on(&client, &mut first, &old_node);
    old_node.signal("CONT");
    // Another read learns the node's support on a connection of its own, before the first
    // read looks at its probe's answer: that answer is still a probe's.
    assert_eq!(&client.get("second").unwrap().unwrap().data[..], b"two");
    let mut operation = first;
    drive(&client, &mut operation);
    let item = operation.finish(&client).unwrap().unwrap();
    assert_eq!(&item.data[..], b"one");
    assert_eq!(client.metrics().migration_hits, 2);
}
