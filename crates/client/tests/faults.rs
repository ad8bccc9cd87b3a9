//! The defined outcome for bad peers: every fault is an error of a known kind (a timeout only
//! where the peer never answers), never a wrong value; a connection that saw a fault is never
//! reused; failing nodes are marked down without moving keys; `ignore_exc` turns faults into
//! misses.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::fmt::Debug;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use elasticache_client::{Client, ClientConfig, Error, ErrorKind, Result};
use support::{free_port, key_on, FakeServer, Fault, Memcached};

const TIMEOUT: Duration = Duration::from_millis(200);

/// How long a test may run before it counts as hung. Only a guard against a hang (a call that
/// never returns would otherwise stall the whole run): it asserts nothing about speed.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Ends the test process, naming the test (libtest names each test's thread after it), if the
/// test is still running after [`HANG_GUARD`] (a panic on another thread could not fail it);
/// dropping the guard disarms it.
struct HangGuard {
    _disarm: mpsc::Sender<()>,
}

fn hang_guard() -> HangGuard {
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let (disarm, disarmed) = mpsc::channel::<()>();
    thread::spawn(move || {
        if disarmed.recv_timeout(HANG_GUARD) == Err(mpsc::RecvTimeoutError::Timeout) {
            eprintln!("{test} hung: still running after {HANG_GUARD:?}");
            std::process::abort();
        }
    });
    HangGuard { _disarm: disarm }
}

/// Short timeouts, and every call goes to the node until `retry_attempts` failures in a row
/// mark it down (no `retry_timeout` pause in between). No gutter: these tests are about what a
/// failure does to the node's own keys (`tests/gutter.rs` has the gutter's).
fn config() -> ClientConfig {
    {
        let mut custom = ClientConfig::default();
        custom.timeout = Some(TIMEOUT);
        custom.connect_timeout = Some(TIMEOUT);
        custom.retry_timeout = Duration::ZERO;
        custom.gutter_ttl = None;
        custom
    }
}

fn client_for(servers: &[String], config: ClientConfig) -> Client {
    Client::connect_to(servers, config).unwrap()
}

/// Asserts `result` failed with an error of `kind`, and returns the error.
fn failure<T: Debug>(result: Result<T>, kind: ErrorKind) -> Error {
    let error = result.expect_err("a bad peer must give an error");
    assert_eq!(error.kind(), kind, "{error}");
    error
}

/// An address with nobody listening.
fn refused_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A value whose declared length no client should try to buffer.
const HUGE: &[u8] = b"VALUE k 0 99999999999\r\n";
const GARBAGE: &[u8] = b"\x00\xff\xfeHELLO\r\n";

/// One address per kind of bad peer, by name.
fn bad_peers() -> Vec<(&'static str, String)> {
    let fake = |fault| FakeServer::start(fault).address();
    vec![
        (
            "closes mid-reply",
            fake(Fault::ReplyAndClose(b"VALUE k 0 10\r\nabc".to_vec())),
        ),
        ("garbage", fake(Fault::Reply(GARBAGE.to_vec()))),
        ("huge value length", fake(Fault::Reply(HUGE.to_vec()))),
        ("never answers", fake(Fault::Silent)),
        (
            "value for another key",
            fake(Fault::Reply(
                b"VALUE other 0 5\r\nwrong\r\nEND\r\n".to_vec(),
            )),
        ),
        ("connection refused", refused_address()),
    ]
}

#[test]
fn a_node_closing_mid_reply_is_a_connection_error_never_a_value() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::ReplyAndClose(b"VALUE a 0 10\r\nabc".to_vec()));
    let client = client_for(&[server.address()], config());
    let error = failure(client.get("a"), ErrorKind::Connection);
    assert!(matches!(error, Error::Closed { .. }), "{error}");
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
}

#[test]
fn garbage_is_a_server_error() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::Reply(GARBAGE.to_vec()));
    let client = client_for(&[server.address()], config());
    let error = failure(client.get("a"), ErrorKind::Server);
    assert!(matches!(error, Error::Protocol { .. }), "{error}");
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
    // (After a failed set, the replay of its invalidation opens connections of its own.)
    let error = failure(client.set("a", 0, b"v", 0), ErrorKind::Server);
    assert!(matches!(error, Error::Protocol { .. }), "{error}");
}

#[test]
fn a_huge_declared_length_fails_at_once_without_awaiting_the_data() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::Reply(HUGE.to_vec()));
    // A long timeout: had the client waited for the data, it would fail with Timeout.
    let config = {
        let mut custom = config();
        custom.timeout = Some(Duration::from_secs(30));
        custom
    };
    let client = client_for(&[server.address()], config);
    for result in [client.get("k").map(drop), client.get_many(&["k"]).map(drop)] {
        let error = failure(result, ErrorKind::Server);
        assert!(
            matches!(&error, Error::Protocol { source, .. }
                if format!("{source:?}").starts_with("ValueTooLarge")),
            "{error}"
        );
    }
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
}

#[test]
fn a_node_that_never_answers_times_out_within_the_timeout() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::Silent);
    let config = {
        let mut custom = config();
        custom.retry_attempts = 10;
        custom
    };
    let client = client_for(&[server.address()], config);
    // Each call reached the server (a connection of its own: the one before was discarded) and
    // gave up after the configured timeout, which the error reports.
    let calls: [&dyn Fn() -> Result<()>; 3] = [
        &|| client.get("a").map(drop),
        &|| client.get_many(&["a", "b"]).map(drop),
        &|| client.incr("a", 1).map(drop),
    ];
    for (made, call) in (1..).zip(calls) {
        let error = failure(call(), ErrorKind::Timeout);
        assert!(
            matches!(error, Error::Timeout { timeout, .. } if timeout == TIMEOUT),
            "{error}"
        );
        assert_eq!(server.connections(), made);
    }
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
}

#[test]
fn a_refused_connection_is_a_connection_error() {
    let _guard = hang_guard();
    let client = client_for(&[refused_address()], config());
    let error = failure(client.get("a"), ErrorKind::Connection);
    assert!(matches!(error, Error::Connect { .. }), "{error}");
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
}

#[test]
fn a_value_for_another_key_is_never_returned() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::Reply(b"VALUE b 0 5\r\nwrong\r\nEND\r\n".to_vec()));
    let config = {
        let mut custom = config();
        custom.retry_attempts = 10;
        custom
    };
    let client = client_for(&[server.address()], config);
    for result in [
        client.get("a"),
        client.gets("a"),
        client.get_many(&["a"]).map(|mut found| found.remove(0)),
    ] {
        let error = failure(result, ErrorKind::Server);
        assert!(matches!(error, Error::Protocol { .. }), "{error}");
    }
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
}

#[test]
fn a_failing_node_is_marked_down_and_its_keys_are_not_moved() {
    let _guard = hang_guard();
    let bad = FakeServer::start(Fault::ReplyAndClose(Vec::new()));
    let good = Memcached::start();
    let config = {
        let mut custom = config();
        custom.retry_attempts = 2;
        custom.dead_timeout = Duration::from_secs(60);
        custom
    };
    let client = client_for(&[bad.address(), good.address()], config);
    let (bad_key, good_key) = (key_on(&client, 0), key_on(&client, 1));
    assert!(client.set(&good_key, 0, b"good", 0).unwrap());

    for attempt in 1..=2 {
        let error = failure(client.get(&bad_key), ErrorKind::Connection);
        assert!(matches!(error, Error::Closed { .. }), "{error}");
        assert_eq!(bad.connections(), attempt);
    }

    // Marked down: every operation on its keys fails fast, without touching the network.
    let results = [
        client.get(&bad_key).map(drop),
        client.incr(&bad_key, 1).map(drop),
        client.get_many(&[&bad_key, &good_key]).map(drop),
    ];
    for result in results {
        let error = failure(result, ErrorKind::Connection);
        assert!(matches!(error, Error::NodeDown { .. }), "{error}");
    }
    assert_eq!(bad.connections(), 2, "a node marked down was contacted");
    // A write fails fast too; the invalidation it could not deliver is then replayed to the
    // node by a probe about once a second (`tests/gutter.rs`), whatever `dead_timeout` says.
    let error = failure(client.set(&bad_key, 0, b"moved?", 0), ErrorKind::Connection);
    assert!(matches!(error, Error::NodeDown { .. }), "{error}");

    // The healthy node still serves its own keys, and was never given the down node's key.
    assert_eq!(client.get(&good_key).unwrap().unwrap().data, &b"good"[..]);
    assert_eq!(good.client().get(&bad_key).unwrap(), None);
    assert_eq!(good.stat("cmd_set"), 1);
}

#[test]
fn a_failed_batch_counts_once_towards_marking_a_node_down() {
    let _guard = hang_guard();
    let config = {
        let mut custom = config();
        custom.retry_attempts = 2;
        custom
    };
    let client = client_for(&[refused_address()], config);
    for attempt in 1..=2 {
        let error = failure(client.get_many(&["a"]), ErrorKind::Connection);
        assert!(
            matches!(error, Error::Connect { .. }),
            "attempt {attempt}: {error}"
        );
    }
    let error = failure(client.get_many(&["a"]), ErrorKind::Connection);
    assert!(matches!(error, Error::NodeDown { .. }), "{error}");
}

#[test]
fn a_slow_node_in_a_batch_does_not_fail_the_healthy_ones() {
    let _guard = hang_guard();
    // The silent node comes first, so the healthy node's reply is read after the deadline.
    let slow = FakeServer::start(Fault::Silent);
    let good = Memcached::start();
    let config = {
        let mut custom = config();
        custom.retry_attempts = 2;
        custom
    };
    let client = client_for(&[slow.address(), good.address()], config);
    let (slow_key, good_key) = (key_on(&client, 0), key_on(&client, 1));
    assert!(client.set(&good_key, 0, b"good", 0).unwrap());
    for _ in 0..2 {
        let error = failure(client.get_many(&[&slow_key, &good_key]), ErrorKind::Timeout);
        assert!(error.to_string().contains(&slow.address()), "{error}");
    }
    // Only the slow node failed twice and is marked down; the healthy one still serves.
    let error = failure(client.get(&slow_key), ErrorKind::Connection);
    assert!(matches!(error, Error::NodeDown { .. }), "{error}");
    assert_eq!(client.get(&good_key).unwrap().unwrap().data, &b"good"[..]);
}

#[test]
fn ignore_exc_turns_every_fault_into_a_miss_but_not_invalid_keys() {
    let _guard = hang_guard();
    let good = Memcached::start();
    for (fault, bad) in bad_peers() {
        let config = {
            let mut custom = config();
            custom.ignore_exc = true;
            custom.retry_attempts = 1000; // every call meets the fault itself
            custom
        };
        let client = client_for(&[bad, good.address()], config);
        let (bad_key, good_key) = (key_on(&client, 0), key_on(&client, 1));

        assert_eq!(client.get(&bad_key).unwrap(), None, "{fault}");
        assert!(!client.set(&bad_key, 0, b"v", 0).unwrap(), "{fault}");
        assert_eq!(client.incr(&bad_key, 1).unwrap(), None, "{fault}");
        assert!(!client.delete(&bad_key).unwrap(), "{fault}");

        assert!(client.set(&good_key, 0, fault.as_bytes(), 0).unwrap());
        let found = client.get_many(&[&bad_key, &good_key]).unwrap();
        assert_eq!(found[0], None, "{fault}");
        assert_eq!(
            found[1].as_ref().map(|item| &item.data[..]),
            Some(fault.as_bytes()),
            "{fault}: the healthy node's value was lost"
        );

        for result in [
            client.get("not a key").map(drop),
            client.set("not a key", 0, b"v", 0).map(drop),
            client.incr("not a key", 1).map(drop),
            client.get_many(&[&good_key, "not a key"]).map(drop),
        ] {
            let error = failure(result, ErrorKind::Client);
            assert!(
                matches!(error, Error::InvalidKey { .. }),
                "{fault}: {error}"
            );
        }
    }
}

#[test]
fn ignore_exc_turns_a_down_node_into_a_miss() {
    let _guard = hang_guard();
    let bad = FakeServer::start(Fault::Reply(GARBAGE.to_vec()));
    let config = {
        let mut custom = config();
        custom.ignore_exc = true;
        custom.retry_attempts = 1;
        // The set and incr below cannot reach the node: with the replay of invalidations on, a
        // thread of its own would connect to deliver them (by design, whether the node is down
        // or not), racing the count of connections the calls made.
        custom.max_invalidations = 0;
        custom
    };
    let client = client_for(&[bad.address()], config);
    assert_eq!(client.get("a").unwrap(), None);
    assert_eq!(bad.connections(), 1);
    assert_eq!(client.get("a").unwrap(), None);
    assert!(!client.set("a", 0, b"v", 0).unwrap());
    assert_eq!(client.incr("a", 1).unwrap(), None);
    assert_eq!(client.get_many(&["a", "b"]).unwrap(), vec![None, None]);
    assert_eq!(bad.connections(), 1, "a node marked down was contacted");
}

#[test]
fn a_late_reply_is_never_handed_to_the_next_request() {
    let _guard = hang_guard();
    // The first connection answers only after the client gave up; later ones answer at once.
    let server = FakeServer::start_each(vec![
        Fault::ReplyAfter(TIMEOUT * 3, b"VALUE a 0 4\r\nlate\r\nEND\r\n".to_vec()),
        Fault::Reply(b"VALUE b 0 3\r\nbee\r\nEND\r\n".to_vec()),
    ]);
    let client = client_for(&[server.address()], config());
    let error = failure(client.get("a"), ErrorKind::Timeout);
    assert!(matches!(error, Error::Timeout { .. }), "{error}");
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);

    // The late reply is on the wire now: a client still holding that connection would read it.
    server.wait_for_replies(1);
    let found = client.get("b").unwrap();
    assert_eq!(found.map(|item| item.data.to_vec()), Some(b"bee".to_vec()));
    assert_eq!(
        server.connections(),
        2,
        "the timed-out connection was reused"
    );
}

#[test]
fn a_connection_that_saw_an_error_is_not_pooled() {
    let _guard = hang_guard();
    // Every fault above already leaves no open connection; here a clean exchange follows, to
    // show that clean connections are reused and faulty ones are not.
    let server = FakeServer::start_each(vec![
        Fault::Reply(GARBAGE.to_vec()),
        Fault::Reply(GARBAGE.to_vec()),
        Fault::Reply(b"END\r\n".to_vec()),
    ]);
    let config = {
        let mut custom = config();
        custom.retry_attempts = 10;
        custom
    };
    let client = client_for(&[server.address()], config);
    let topology = client.topology();
    let node = &topology.nodes()[0];

    failure(client.get("a"), ErrorKind::Server);
    assert_eq!((server.connections(), node.open_connections()), (1, 0));
    failure(client.get_many(&["a", "b"]), ErrorKind::Server);
    assert_eq!((server.connections(), node.open_connections()), (2, 0));

    for _ in 0..3 {
        assert_eq!(client.get("a").unwrap(), None);
        assert_eq!(client.get_many(&["a", "b"]).unwrap(), vec![None, None]);
    }
    assert_eq!((server.connections(), node.open_connections()), (3, 1));
}

#[test]
fn a_set_not_stored_deletes_the_old_value_in_the_same_operation() {
    let _guard = hang_guard();
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![b"NOT_STORED\r\n".to_vec(), b"DELETED\r\n".to_vec()],
        then_close: false,
    });
    let client = client_for(&[server.address()], config());
    assert!(!client.set("k", 0, b"v", 0).unwrap());
    // The cleanup `delete` was answered before the call returned, on the same connection.
    server.wait_for_replies(2);
    assert_eq!(server.connections(), 1);
}

#[test]
fn under_ignore_exc_a_set_whose_exchange_failed_deletes_on_a_new_connection() {
    let _guard = hang_guard();
    // The first connection takes the set and closes without a reply; the next one answers
    // the cleanup `delete`.
    let server = FakeServer::start_each(vec![
        Fault::ReplyAndClose(Vec::new()),
        Fault::Reply(b"DELETED\r\n".to_vec()),
    ]);
    let mut config = config();
    config.ignore_exc = true;
    let client = client_for(&[server.address()], config);
    assert!(!client.set("k", 0, b"v", 0).unwrap());
    server.wait_for_replies(2);
    assert_eq!(server.connections(), 2);
}

#[test]
fn without_ignore_exc_a_set_whose_exchange_failed_raises_and_sends_nothing_more() {
    let _guard = hang_guard();
    let server = FakeServer::start_each(vec![
        Fault::ReplyAndClose(Vec::new()),
        Fault::Reply(b"DELETED\r\n".to_vec()),
    ]);
    let client = client_for(&[server.address()], config());
    failure(client.set("k", 0, b"v", 0), ErrorKind::Connection);
    assert_eq!(server.connections(), 1);
}

#[test]
fn under_ignore_exc_a_set_that_timed_out_still_deletes_with_a_deadline_of_its_own() {
    let _guard = hang_guard();
    let server = FakeServer::start_each(vec![Fault::Silent, Fault::Reply(b"DELETED\r\n".to_vec())]);
    let mut config = config();
    config.ignore_exc = true;
    let client = client_for(&[server.address()], config);
    assert!(!client.set("k", 0, b"v", 0).unwrap());
    server.wait_for_replies(1);
    assert_eq!(server.connections(), 2);
}
