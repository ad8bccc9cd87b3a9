//! Gets driven by an event loop (`start_get` / `advance_get`): the same values and the same
//! failure outcomes as a blocking `get`, and the connection back in its pool only after a
//! clean reply.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use elasticache_client::{
    Client, ClientConfig, ErrorKind, GetProgress, GetStart, PendingGet, Result,
};
use support::{event_loop_get, FakeServer, Fault, Memcached};

/// The only pending outcome a test expects: the fake servers answer after the start.
fn pending(start: Result<GetStart>) -> PendingGet {
    match start.unwrap() {
        GetStart::Pending(pending) => pending,
        other => panic!("expected a pending get, got {other:?}"),
    }
}

fn open_connections(client: &Client) -> usize {
    client.topology().nodes()[0].open_connections()
}

fn config() -> ClientConfig {
    {
        let mut custom = ClientConfig::default();
        custom.timeout = Some(Duration::from_millis(200));
        custom.retry_timeout = Duration::ZERO;
        custom
    }
}

#[test]
fn a_cold_pool_leaves_the_get_to_the_blocking_path() {
    let server = Memcached::start();
    let client = server.client();
    assert!(matches!(client.start_get("k"), Ok(GetStart::WouldBlock)));
    assert_eq!(
        open_connections(&client),
        0,
        "nothing may be opened on the event loop"
    );
}

#[test]
fn hits_and_misses_reuse_the_pooled_connection() {
    let server = Memcached::start();
    let client = server.client();
    client.set("greeting", 7, b"hello", 0).unwrap();
    for _ in 0..50 {
        let item = event_loop_get(&client, "greeting").unwrap().unwrap();
        assert_eq!((item.flags, &item.data[..]), (7, &b"hello"[..]));
        assert_eq!(event_loop_get(&client, "absent").unwrap(), None);
    }
    let big = vec![b'x'; 600 * 1024];
    client.set("big", 0, &big, 0).unwrap();
    assert_eq!(event_loop_get(&client, "big").unwrap().unwrap().data, big);
    assert_eq!(client.topology().nodes()[0].connections_opened().0, 1);
    assert_eq!(open_connections(&client), 1);
}

/// A server that answers the warm-up get, then the given replies in turn.
fn after_warm_up(replies: &[&[u8]], then_close: bool) -> FakeServer {
    let mut all = vec![b"END\r\n".to_vec()];
    all.extend(replies.iter().map(|r| r.to_vec()));
    FakeServer::start(Fault::InTurn {
        replies: all,
        then_close,
    })
}

/// A client of `server` with one pooled connection.
fn warm_client(server: &FakeServer, config: ClientConfig) -> Client {
    let client = Client::connect_to(&[server.address()], config).unwrap();
    assert_eq!(client.get("warm-up").unwrap(), None);
    client
}

#[test]
fn an_abandoned_get_closes_its_connection() {
    let server = after_warm_up(&[], false);
    let client = warm_client(&server, config());
    let get = pending(client.start_get("first"));
    assert_eq!(open_connections(&client), 1);
    drop(get);
    assert_eq!(open_connections(&client), 0);
    // Nothing stays in the pool: the next get has to connect, off the event loop.
    assert!(matches!(
        client.start_get("second"),
        Ok(GetStart::WouldBlock)
    ));
}

#[test]
fn garbage_and_values_for_other_keys_are_server_errors_and_close_the_connection() {
    for reply in [&b"garbage\r\n"[..], b"VALUE other 0 1\r\nx\r\nEND\r\n"] {
        let server = after_warm_up(&[reply], false);
        let client = warm_client(&server, config());
        let error = event_loop_get(&client, "mine").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Server, "{error}");
        assert_eq!(open_connections(&client), 0);
    }
}

#[test]
fn a_node_that_closes_mid_reply_is_a_connection_error() {
    let server = after_warm_up(&[b"VALUE mine 0 10\r\nabc"], true);
    let client = warm_client(&server, config());
    let error = event_loop_get(&client, "mine").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection, "{error}");
    assert_eq!(open_connections(&client), 0);
}

#[test]
fn a_silent_node_times_out_when_the_deadline_passes_and_ignore_exc_makes_it_a_miss() {
    for ignore_exc in [false, true] {
        let server = after_warm_up(&[], false);
        let client = warm_client(&server, {
            let mut custom = config();
            custom.ignore_exc = ignore_exc;
            custom
        });
        let mut get = pending(client.start_get("mine"));
        assert!(matches!(
            client.advance_get(&mut get),
            Ok(GetProgress::Waiting)
        ));
        let outcome = client.expire_get(&mut get);
        if ignore_exc {
            assert_eq!(outcome.unwrap(), None);
        } else {
            assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Timeout);
        }
        assert!(matches!(
            client.advance_get(&mut get),
            Ok(GetProgress::Done(None))
        ));
        get.close();
        assert_eq!(open_connections(&client), 0);
    }
}

#[test]
fn a_node_marked_down_fails_at_once_without_the_network() {
    let server = after_warm_up(&[], false);
    let client = warm_client(&server, {
        let mut custom = config();
        custom.retry_attempts = 1;
        custom.dead_timeout = Duration::from_secs(60);
        custom
    });
    let mut get = pending(client.start_get("mine"));
    assert!(client.expire_get(&mut get).is_err());
    drop(get);
    let error = client.start_get("mine").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection, "{error}");
    assert_eq!(server.connections(), 1);
}

#[test]
fn invalid_keys_are_client_errors() {
    let server = Memcached::start();
    let client = server.client();
    let error = client.start_get("has space").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Client);
}
