//! Auto Discovery against a fake configuration endpoint and real memcached nodes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use elasticache_client::{
    Client, ClientConfig, DiscoveryConfig, DiscoveryMode, Error, ErrorKind, NodeAddress, Ring,
};
use support::{member, Endpoint, FakeEndpoint, Memcached};

fn settings(interval: Option<Duration>) -> DiscoveryConfig {
    DiscoveryConfig {
        mode: DiscoveryMode::Auto,
        interval,
        retry_delay: Duration::ZERO,
        use_vpc_ip_address: true,
    }
}

fn quick() -> ClientConfig {
    ClientConfig {
        timeout: Some(Duration::from_millis(300)),
        connect_timeout: Some(Duration::from_millis(300)),
        ..ClientConfig::default()
    }
}

fn discovering(endpoint: &FakeEndpoint, interval: Option<Duration>) -> Arc<Client> {
    let address = NodeAddress::parse(&endpoint.address()).unwrap();
    Client::with_discovery(address, quick(), settings(interval))
}

fn names(client: &Client) -> Vec<String> {
    client
        .topology()
        .nodes()
        .iter()
        .map(|n| n.address.name.clone())
        .collect()
}

/// Polls `condition` until it holds (panics after 10 s).
fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5)); // polling interval, not synchronisation
    }
}

#[test]
fn first_use_discovers_and_scale_out_moves_exactly_the_new_nodes_keys() {
    let nodes: Vec<Memcached> = (0..3).map(|_| Memcached::start()).collect();
    let members: Vec<String> = nodes.iter().map(member).collect();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: members[..2].to_vec(),
    });
    let client = discovering(&endpoint, None);
    assert_eq!(
        endpoint.requests(),
        0,
        "nothing is contacted before the first operation"
    );
    client.set("k", 0, b"v", 0).unwrap();
    assert_eq!(endpoint.requests(), 1);
    assert_eq!(names(&client), vec![nodes[0].address(), nodes[1].address()]);
    assert_eq!(client.topology().version(), Some(1));

    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        client.set(key, 0, key.as_bytes(), 0).unwrap();
    }
    endpoint.set(Endpoint::Cluster {
        version: 2,
        members: members.clone(),
    });
    client.refresh_membership().unwrap();
    assert_eq!(client.topology().version(), Some(2));
    let all: Vec<String> = nodes.iter().map(Memcached::address).collect();
    assert_eq!(names(&client), all);

    // A key now owned by the new node is a miss there (nothing moved it); every other key
    // still reads from where it was written.
    let ring = Ring::new(all.iter().map(String::as_str));
    let mut moved = 0;
    for key in &keys {
        let found = client.get(key).unwrap();
        if ring.node_for(key) == Some(2) {
            assert_eq!(found, None, "{key}");
            moved += 1;
        } else {
            assert_eq!(found.unwrap().data, key.as_bytes(), "{key}");
        }
    }
    assert!(moved > 50, "only {moved} keys moved to the new node");
}

#[test]
fn the_background_refresher_follows_scale_out_and_in() {
    let nodes: Vec<Memcached> = (0..2).map(|_| Memcached::start()).collect();
    let members: Vec<String> = nodes.iter().map(member).collect();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: members[..1].to_vec(),
    });
    let client = discovering(&endpoint, Some(Duration::from_millis(100)));
    client.set("warm", 0, b"1", 0).unwrap();
    assert_eq!(names(&client).len(), 1);
    endpoint.set(Endpoint::Cluster {
        version: 2,
        members: members.clone(),
    });
    eventually("scale-out", || names(&client).len() == 2);
    endpoint.set(Endpoint::Cluster {
        version: 3,
        members: members[1..].to_vec(),
    });
    eventually("scale-in", || names(&client) == vec![nodes[1].address()]);
    assert_eq!(client.topology().version(), Some(3));
}

#[test]
fn failures_keep_the_last_good_membership() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 4,
        members: vec![member(&node)],
    });
    let client = discovering(&endpoint, None);
    client.set("k", 0, b"v", 0).unwrap();
    for failure in [
        Endpoint::Garbage,
        Endpoint::Silent,
        Endpoint::Cluster {
            version: 9,
            members: vec![],
        },
    ] {
        endpoint.set(failure);
        thread::sleep(Duration::from_millis(1100)); // past the retry floor: a real attempt
        assert!(client.refresh_membership().is_err());
        assert_eq!(names(&client), vec![node.address()]);
        assert_eq!(client.get("k").unwrap().unwrap().data, &b"v"[..]);
    }
}

#[test]
fn a_failed_first_discovery_fails_fast_until_the_retry_delay_then_recovers() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Garbage);
    let client = discovering(&endpoint, None);
    let error = client.get("k").unwrap_err();
    assert!(matches!(error, Error::Discovery { .. }), "{error}");
    assert_eq!(error.kind(), ErrorKind::Connection);
    assert_eq!(endpoint.requests(), 1);
    assert!(client.get("k").is_err());
    assert_eq!(
        endpoint.requests(),
        1,
        "a failed discovery is not retried at once"
    );

    endpoint.set(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    eventually("recovery", || client.get("k").is_ok());
    assert_eq!(endpoint.requests(), 2);
}

#[test]
fn ignore_exc_turns_a_missing_ring_into_misses() {
    let endpoint = FakeEndpoint::start(Endpoint::Silent);
    let address = NodeAddress::parse(&endpoint.address()).unwrap();
    let config = ClientConfig {
        ignore_exc: true,
        ..quick()
    };
    let client = Client::with_discovery(address, config, settings(None));
    assert_eq!(client.get("k").unwrap(), None);
    assert!(!client.set("k", 0, b"v", 0).unwrap());
    assert_eq!(
        client
            .set_many(&[("a", 0, b"1"), ("b", 0, b"2")], 0)
            .unwrap(),
        vec![0, 1]
    );
    assert_eq!(client.get_many(&["a", "b"]).unwrap(), vec![None, None]);
}

#[test]
fn many_threads_at_a_cold_start_share_one_discovery() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    let client = discovering(&endpoint, None);
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let client = Arc::clone(&client);
            thread::spawn(move || client.set(&format!("k{i}"), 0, b"v", 0).unwrap())
        })
        .collect();
    for worker in workers {
        assert!(worker.join().unwrap());
    }
    assert_eq!(endpoint.requests(), 1);
}

#[test]
fn plain_memcached_is_one_static_node_in_auto_mode_and_an_error_in_on_mode() {
    let node = Memcached::start();
    let address = NodeAddress::parse(&node.address()).unwrap();
    let auto = Client::with_discovery(
        address.clone(),
        quick(),
        settings(Some(Duration::from_millis(50))),
    );
    auto.set("k", 0, b"v", 0).unwrap();
    assert_eq!(names(&auto), vec![node.address()]);
    assert_eq!(auto.get("k").unwrap().unwrap().data, &b"v"[..]);

    let strict = DiscoveryConfig {
        mode: DiscoveryMode::On,
        ..settings(None)
    };
    let on = Client::with_discovery(address, quick(), strict);
    let error = on.get("k").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not an ElastiCache configuration endpoint"),
        "{error}"
    );
}

#[test]
fn legacy_engines_are_asked_for_the_configuration_key() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Legacy {
        version: 2,
        members: vec![member(&node)],
    });
    let client = discovering(&endpoint, None);
    client.set("k", 0, b"v", 0).unwrap();
    assert_eq!(names(&client), vec![node.address()]);
    assert_eq!(client.topology().version(), Some(2));
}

#[test]
fn hostnames_are_used_when_asked_or_when_the_ip_is_unknown() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: vec![format!("localhost||{}", node.port)],
    });
    let client = discovering(&endpoint, None);
    client.set("k", 0, b"v", 0).unwrap();
    assert_eq!(names(&client), vec![format!("localhost:{}", node.port)]);

    endpoint.set(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    let address = NodeAddress::parse(&endpoint.address()).unwrap();
    let by_name = DiscoveryConfig {
        use_vpc_ip_address: false,
        ..settings(None)
    };
    let client = Client::with_discovery(address, quick(), by_name);
    client.set("k", 0, b"v", 0).unwrap();
    assert_eq!(names(&client), vec![format!("localhost:{}", node.port)]);
}

#[test]
fn dropping_the_client_stops_its_refresher() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    let client = discovering(&endpoint, Some(Duration::from_millis(20)));
    client.set("k", 0, b"v", 0).unwrap();
    endpoint.wait_for_requests(3);
    drop(client);
    let after_drop = endpoint.requests();
    thread::sleep(Duration::from_millis(200)); // ten intervals in which nothing may happen
    assert!(
        endpoint.requests() <= after_drop + 1,
        "the refresher kept running"
    );
}

#[test]
fn an_endpoint_answering_error_after_a_discovery_keeps_the_membership() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    let client = discovering(&endpoint, None);
    client.set("k", 0, b"v", 0).unwrap();
    // ERROR to both discovery commands, as plain memcached would answer.
    endpoint.set(Endpoint::Legacy {
        version: 0,
        members: vec![],
    });
    thread::sleep(Duration::from_millis(1100)); // past the retry floor: a real attempt
    assert!(matches!(
        client.refresh_membership(),
        Err(Error::Discovery { .. })
    ));
    assert_eq!(names(&client), vec![node.address()]);
}
