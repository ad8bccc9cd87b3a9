//! Auto Discovery against a fake configuration endpoint and real memcached nodes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::TcpStream;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use elasticache_client::{
    Client, ClientConfig, DiscoveryConfig, DiscoveryMode, Error, ErrorKind, NodeAddress, Ring,
    TlsSettings,
};
use socket2::{Domain, Socket, Type};
use support::{member, Endpoint, FakeEndpoint, Memcached};

fn settings(interval: Option<Duration>) -> DiscoveryConfig {
    {
        let mut custom = DiscoveryConfig::default();
        custom.mode = DiscoveryMode::Auto;
        custom.interval = interval;
        custom.retry_delay = Duration::ZERO;
        custom.use_vpc_ip_address = true;
        custom
    }
}

fn quick() -> ClientConfig {
    {
        let mut custom = ClientConfig::default();
        custom.timeout = Some(Duration::from_millis(300));
        custom.connect_timeout = Some(Duration::from_millis(300));
        custom
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
fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(10), condition);
}

/// Polls `condition` until it holds (panics after `bound`).
fn eventually_within(what: &str, bound: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
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

    // A key now owned by the new node is not there yet; during the warm-up window it is read
    // from its previous owner and copied to the new node. Every other key still reads from
    // where it was written.
    let ring = Ring::new(all.iter().map(String::as_str));
    let new_node = nodes[2].client();
    let mut moved = 0;
    for key in &keys {
        let owned_by_new = ring.node_for(key) == Some(2);
        if owned_by_new {
            assert_eq!(new_node.get(key).unwrap(), None, "{key}");
            moved += 1;
        }
        let found = client.get(key).unwrap();
        assert_eq!(found.unwrap().data, key.as_bytes(), "{key}");
        if owned_by_new {
            assert!(new_node.get(key).unwrap().is_some(), "{key} is copied");
        }
    }
    assert!(moved > 50, "only {moved} keys moved to the new node");
    assert_eq!(client.metrics().warmup_copies, moved);
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
        // Failed attempts are rate-limited: ask until one reaches the endpoint.
        let before = endpoint.requests();
        eventually("a real attempt", || {
            assert!(client.refresh_membership().is_err());
            endpoint.requests() > before
        });
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
    // Bytes that are not the protocol: the endpoint's fault, kept as such.
    assert_eq!(error.kind(), ErrorKind::Server);
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
    let config = {
        let mut custom = quick();
        custom.ignore_exc = true;
        custom
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

    let strict = {
        let mut custom = settings(None);
        custom.mode = DiscoveryMode::On;
        custom
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
    let by_name = {
        let mut custom = settings(None);
        custom.use_vpc_ip_address = false;
        custom
    };
    let client = Client::with_discovery(address, quick(), by_name);
    client.set("k", 0, b"v", 0).unwrap();
    assert_eq!(names(&client), vec![format!("localhost:{}", node.port)]);
}

#[test]
fn dropping_the_client_stops_its_refresher() {
    let node = Memcached::start();
    let cluster = Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    };
    let endpoint = FakeEndpoint::start(cluster.clone());
    let client = discovering(&endpoint, Some(Duration::from_millis(20)));
    client.set("k", 0, b"v", 0).unwrap();
    endpoint.wait_for_requests(3);
    // A witness with the same interval on an endpoint of its own: its requests count the
    // intervals that pass.
    let witnessed = FakeEndpoint::start(cluster);
    let witness = discovering(&witnessed, Some(Duration::from_millis(20)));
    witness.set("k", 0, b"v", 0).unwrap();
    drop(client);
    let after_drop = endpoint.requests();
    let start = witnessed.requests();
    witnessed.wait_for_requests(start + 10);
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
    // ERROR to `config get cluster` and no legacy key, as plain memcached would answer.
    endpoint.set(Endpoint::Plain);
    let error = client.refresh_membership().unwrap_err();
    assert!(
        matches!(&error, Error::Discovery { source, .. } if matches!(**source, Error::UnknownCommand { .. })),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Server);
    assert_eq!(names(&client), vec![node.address()]);
}

#[test]
fn a_hanging_endpoint_is_a_timeout_and_the_kept_failure_stays_one() {
    let endpoint = FakeEndpoint::start(Endpoint::Silent);
    let client = discovering(&endpoint, None);
    for _ in 0..2 {
        // The second answer is the kept failure (rate-limited): the same kind.
        let error = client.get("k").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
        assert!(
            matches!(&error, Error::Discovery { source, .. } if matches!(**source, Error::Timeout { .. })),
            "{error}"
        );
    }
    assert_eq!(endpoint.requests(), 1);
}

#[test]
fn a_tls_configuration_error_during_discovery_is_the_callers_even_under_ignore_exc() {
    let endpoint = FakeEndpoint::start(Endpoint::Silent);
    let tls = ({
        let mut custom = TlsSettings::default();
        custom.skip_verification = true;
        custom
    })
    .build()
    .unwrap();
    let config = {
        let mut custom = quick();
        custom.ignore_exc = true;
        custom.tls = Some(tls);
        custom
    };
    // A name no certificate can be verified against (the settings refuse such a
    // `server_name` up front; an address's own TLS name is only checked at connect).
    let address = NodeAddress {
        tls_name: Some("not a host name".to_owned()),
        ..NodeAddress::parse(&endpoint.address()).unwrap()
    };
    let client = Client::with_discovery(address, config, settings(None));
    let error = client.get("k").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Client, "{error}");
    assert!(
        matches!(&error, Error::Discovery { source, .. } if matches!(**source, Error::TlsConfig { .. })),
        "{error}"
    );
}

/// A listener whose backlog is full: connecting to it hangs until the connect timeout.
fn unanswering_listener() -> (Socket, TcpStream, String) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    // The one connection the backlog holds; the kernel drops further SYNs.
    let filler = TcpStream::connect(address).unwrap();
    (listener, filler, address.to_string())
}

#[test]
fn callers_of_a_hanging_discovery_give_up_at_their_own_deadline() {
    let (_listener, _filler, address) = unanswering_listener();
    let timeout = Duration::from_millis(200);
    let connect_timeout = Duration::from_secs(3);
    let config = {
        let mut custom = ClientConfig::default();
        custom.timeout = Some(timeout);
        custom.connect_timeout = Some(connect_timeout);
        custom
    };
    let client = Client::with_discovery(
        NodeAddress::parse(&address).unwrap(),
        config,
        settings(None),
    );
    let callers = 8;
    let start = Arc::new(Barrier::new(callers));
    let (results, received) = mpsc::channel();
    for _ in 0..callers {
        let (client, start, results) = (Arc::clone(&client), Arc::clone(&start), results.clone());
        thread::spawn(move || {
            start.wait();
            results.send(client.get("k")).unwrap();
        });
    }
    // One caller leads the discovery, stuck in a connect that `connect_timeout` alone would let
    // go on for 3 s: its operation's `timeout` ends it. The others wait for it no longer than
    // their own deadline. Every one of them answers with a timeout of `timeout`.
    for _ in 0..callers {
        let error = received.recv().unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
        assert!(
            matches!(&error, Error::Discovery { source, .. } if matches!(**source, Error::Timeout { timeout: t, .. } if t == timeout)),
            "a caller outlived its deadline: {error}"
        );
    }
}

#[test]
fn with_no_membership_discovery_is_retried_steadily_and_the_next_try_recovers() {
    let node = Memcached::start();
    let endpoint = FakeEndpoint::start(Endpoint::Garbage);
    let client = discovering(&endpoint, Some(Duration::from_secs(60)));
    // An outage of seven attempts. Doubling pauses (1, 2, 4, 8, 16, 32 s) would take a minute
    // to get there; a steady pace of about a second, well within the bound.
    eventually_within("seven failed attempts", Duration::from_secs(30), || {
        assert!(client.get("k").is_err());
        endpoint.requests() >= 7
    });
    endpoint.set(Endpoint::Cluster {
        version: 1,
        members: vec![member(&node)],
    });
    // Requests from here on are answered well (one in the air may have had garbage).
    let failed = endpoint.requests();
    eventually_within("recovery", Duration::from_secs(5), || {
        client.get("k").is_ok()
    });
    assert!(
        endpoint.requests() <= failed + 1,
        "the first attempt after the endpoint's return brings the cache back"
    );
}
