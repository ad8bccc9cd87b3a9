//! Operations driven by an event loop (`start_*` / `advance`): the same values and the same
//! failure outcomes as the blocking methods, nothing blocking on a warm pool, and a connection
//! back in its pool only after a clean exchange.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use elasticache_client::{
    Client, ClientConfig, Counter, ErrorKind, IncrDecrReply, ItemList, KeyList, Progress, Store,
    StoreReply,
};
use support::{drive, event_loop_get, FakeServer, Fault, Memcached};

fn open_connections(client: &Client) -> usize {
    client
        .topology()
        .nodes()
        .iter()
        .map(|node| node.open_connections())
        .sum()
}

fn config() -> ClientConfig {
    let mut custom = ClientConfig::default();
    custom.timeout = Some(Duration::from_millis(200));
    custom.retry_timeout = Duration::ZERO;
    custom
}

#[test]
fn a_cold_pool_asks_for_the_blocking_step_and_then_runs_on_events() {
    let server = Memcached::start();
    let client = server.client();
    client.set("k", 0, b"v", 0).unwrap();
    client.topology().nodes()[0].close_idle();
    let mut get = client.start_get("k".to_owned()).unwrap();
    assert_eq!(get.advance(&client), Progress::Block);
    assert_eq!(
        open_connections(&client),
        0,
        "nothing may be opened by a non-blocking step"
    );
    get.prepare(&client);
    assert_eq!(open_connections(&client), 1);
    drive(&client, &mut get);
    assert_eq!(get.finish(&client).unwrap().unwrap().data, &b"v"[..]);
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

#[test]
fn every_command_runs_on_events_across_nodes_and_agrees_with_the_blocking_path() {
    let (a, b, c) = (Memcached::start(), Memcached::start(), Memcached::start());
    let client = Client::connect_to(&[a.address(), b.address(), c.address()], config()).unwrap();
    // Warm every pool, so that no step blocks.
    client.flush_all().unwrap();

    let big = vec![b'y'; 300 * 1024];
    let mut items = ItemList::with_capacity(60);
    for i in 0..60 {
        let value = if i == 7 {
            big.clone()
        } else {
            format!("value-{i}").into_bytes()
        };
        items.push(&format!("key-{i}"), i, &value);
    }
    let mut set_many = client.start_set_many(items, 0).unwrap();
    drive(&client, &mut set_many);
    assert_eq!(set_many.finish(&client).unwrap(), Vec::<usize>::new());

    let mut keys = KeyList::with_capacity(61);
    for i in 0..60 {
        keys.push(&format!("key-{i}"));
    }
    keys.push("absent");
    let mut get_many = client.start_get_many(keys.clone()).unwrap();
    drive(&client, &mut get_many);
    let mut seen = Vec::new();
    get_many
        .finish(&client)
        .unwrap()
        .try_for_each(|position, flags, data| {
            seen.push((position, flags, data.len()));
            Ok::<_, ()>(())
        })
        .unwrap();
    assert_eq!(seen.len(), 60);
    assert!(seen.iter().all(|&(p, flags, _)| flags as usize == p));
    assert_eq!(seen[7].2, big.len());
    let refs: Vec<&str> = (0..61).map(|p| keys.get(p)).collect();
    let blocking = client.get_many(&refs).unwrap();
    assert_eq!(blocking.iter().flatten().count(), 60);

    let mut add = client
        .start_store(Store::Add, "key-1".to_owned(), 0, b"again".to_vec(), 0)
        .unwrap();
    drive(&client, &mut add);
    assert_eq!(add.finish(&client).unwrap(), StoreReply::NotStored);

    let mut set = client
        .start_store(Store::Set, "n".to_owned(), 2, b"41".to_vec(), 0)
        .unwrap();
    drive(&client, &mut set);
    assert_eq!(set.finish(&client).unwrap(), StoreReply::Stored);
    let mut incr = client
        .start_counter(Counter::Incr, "n".to_owned(), 1)
        .unwrap();
    drive(&client, &mut incr);
    assert_eq!(incr.finish(&client).unwrap(), IncrDecrReply::Value(42));

    let mut touch = client.start_touch("n".to_owned(), 100).unwrap();
    drive(&client, &mut touch);
    assert!(touch.finish(&client).is_ok());

    let mut delete = client.start_delete("n".to_owned()).unwrap();
    drive(&client, &mut delete);
    assert!(delete.finish(&client).is_ok());
    assert_eq!(client.get("n").unwrap(), None);

    let mut delete_many = client.start_delete_many(keys).unwrap();
    drive(&client, &mut delete_many);
    assert_eq!(delete_many.finish(&client).unwrap(), 60);

    let mut flush = client.start_flush_all().unwrap();
    drive(&client, &mut flush);
    client.flushed(flush.finish(&client)).unwrap();
    // One connection per node throughout: every exchange gave its connection back.
    assert_eq!(open_connections(&client), 3);
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
fn an_abandoned_operation_closes_its_connection() {
    let server = after_warm_up(&[], false);
    let client = warm_client(&server, config());
    let mut get = client.start_get("first".to_owned()).unwrap();
    assert_eq!(get.advance(&client), Progress::Wait);
    assert_eq!(open_connections(&client), 1);
    drop(get);
    assert_eq!(open_connections(&client), 0);
    // Nothing stays in the pool: the next get has to connect, off the event loop.
    let mut next = client.start_get("second".to_owned()).unwrap();
    assert_eq!(next.advance(&client), Progress::Block);
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
fn a_silent_node_times_out_at_the_deadline_and_ignore_exc_makes_it_a_miss() {
    for ignore_exc in [false, true] {
        let server = after_warm_up(&[], false);
        let client = warm_client(&server, {
            let mut custom = config();
            custom.ignore_exc = ignore_exc;
            custom
        });
        let mut get = client.start_get("mine".to_owned()).unwrap();
        assert_eq!(get.advance(&client), Progress::Wait);
        // Finishing before the end is the deadline passing: what is unfinished times out.
        let outcome = get.finish(&client);
        if ignore_exc {
            assert_eq!(outcome.unwrap(), None);
        } else {
            assert_eq!(outcome.unwrap_err().kind(), ErrorKind::Timeout);
        }
        assert_eq!(open_connections(&client), 0);
    }
}

#[test]
fn advancing_past_the_deadline_ends_the_operation_as_a_timeout() {
    let server = after_warm_up(&[], false);
    let client = warm_client(&server, config());
    let mut get = client.start_get("mine".to_owned()).unwrap();
    let deadline = get.deadline().unwrap();
    // The deadline passing is what is tested: nothing else to wait for.
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        std::thread::sleep(left);
    }
    assert_eq!(get.advance(&client), Progress::Done);
    assert_eq!(get.finish(&client).unwrap_err().kind(), ErrorKind::Timeout);
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
    let mut get = client.start_get("mine".to_owned()).unwrap();
    assert_eq!(get.advance(&client), Progress::Wait);
    assert!(get.finish(&client).is_err());
    let mut again = client.start_get("mine".to_owned()).unwrap();
    assert_eq!(again.advance(&client), Progress::Done);
    let error = again.finish(&client).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connection, "{error}");
    assert_eq!(server.connections(), 1);
}

#[test]
fn invalid_keys_are_client_errors() {
    let server = Memcached::start();
    let client = server.client();
    let error = client.start_get("has space".to_owned()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Client);
}

#[test]
fn an_operation_ended_before_its_first_exchange_gives_its_connections_back() {
    let server = Memcached::start();
    let client = server.client();
    client.set("k", 0, b"v", 0).unwrap();
    client.topology().nodes()[0].close_idle();
    // The blocking step connects; the operation then ends (a cancelled task) before any
    // request is written: the new connection is clean, and stays pooled.
    let mut get = client.start_get("k".to_owned()).unwrap();
    assert_eq!(get.advance(&client), Progress::Block);
    get.prepare(&client);
    drop(get);
    assert_eq!(open_connections(&client), 1);
    assert_eq!(
        event_loop_get(&client, "k").unwrap().unwrap().data,
        &b"v"[..]
    );
    // The set's connection (closed above), then the blocking step's: no third one.
    assert_eq!(client.topology().nodes()[0].connections_opened().0, 2);
}

#[test]
fn replies_trickling_a_byte_at_a_time_read_the_same_on_events() {
    // Every way a reply can be cut: items, lines and values split at every byte.
    let reply = b"VALUE a 1 1\r\nx\r\nVALUE c 2 5\r\nhello\r\nEND\r\n".to_vec();
    let server = FakeServer::start(Fault::Trickle(Duration::from_micros(20), reply));
    let mut custom = config();
    custom.timeout = Some(Duration::from_secs(5));
    let client = Client::connect_to(&[server.address()], custom).unwrap();
    // The blocking path reads it (and pools the connection)...
    let blocking: Vec<Option<Vec<u8>>> = client
        .get_many(&["a", "b", "c"])
        .unwrap()
        .into_iter()
        .map(|item| item.map(|i| i.data.to_vec()))
        .collect();
    assert_eq!(
        blocking,
        vec![Some(b"x".to_vec()), None, Some(b"hello".to_vec())]
    );
    // ... and the event-driven one reads the same, however many steps it takes.
    for _ in 0..3 {
        let mut keys = KeyList::with_capacity(3);
        for key in ["a", "b", "c"] {
            keys.push(key);
        }
        let mut get_many = client.start_get_many(keys).unwrap();
        drive(&client, &mut get_many);
        let mut seen = Vec::new();
        get_many
            .finish(&client)
            .unwrap()
            .try_for_each(|position, flags, data| {
                seen.push((position, flags, data.to_vec()));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(seen, vec![(0, 1, b"x".to_vec()), (2, 2, b"hello".to_vec())]);
    }
    assert_eq!(open_connections(&client), 1);
}

#[test]
fn trickled_storage_replies_with_refusals_read_the_same_on_events() {
    let reply = b"STORED\r\nSERVER_ERROR object too large for cache\r\nNOT_STORED\r\n".to_vec();
    let server = FakeServer::start(Fault::Trickle(Duration::from_micros(20), reply));
    let mut custom = config();
    custom.timeout = Some(Duration::from_secs(5));
    let client = Client::connect_to(&[server.address()], custom).unwrap();
    let items: [(&str, u32, &[u8]); 3] = [("a", 0, b"1"), ("b", 0, b"2"), ("c", 0, b"3")];
    assert_eq!(client.set_many(&items, 0).unwrap(), vec![1, 2]);
    let mut owned = ItemList::with_capacity(3);
    for (key, flags, data) in items {
        owned.push(key, flags, data);
    }
    let mut set_many = client.start_set_many(owned, 0).unwrap();
    drive(&client, &mut set_many);
    assert_eq!(set_many.finish(&client).unwrap(), vec![1, 2]);
    assert_eq!(
        open_connections(&client),
        1,
        "refusals are replies: the stream is in step"
    );
}

#[test]
fn a_full_pool_is_waited_for_by_the_driver_and_ends_as_exhausted_at_the_deadline() {
    // The warm-up is answered; nothing after it, on that connection or a new one, so every
    // exchange started here holds its connection until the test drops it.
    let server = FakeServer::start_each(vec![
        Fault::InTurn {
            replies: vec![b"END\r\n".to_vec()],
            then_close: false,
        },
        Fault::Silent,
    ]);
    let client = warm_client(&server, {
        let mut custom = config();
        custom.max_pool_size = 1;
        custom
    });
    let pool_waits = |client: &Client| client.metrics().nodes[0].pool_waits;
    // The one connection is held by an exchange the server never answers.
    let mut holder = client.start_get("held".to_owned()).unwrap();
    assert_eq!(holder.advance(&client), Progress::Wait);

    let mut waiter = client.start_get("waiting".to_owned()).unwrap();
    assert_eq!(waiter.advance(&client), Progress::Block);
    assert!(waiter.waits_for_pool());
    // Without waiting: nothing to connect, nothing taken, the wait counted once.
    waiter.prepare_without_waiting(&client);
    assert_eq!(waiter.advance(&client), Progress::Block);
    assert!(waiter.waits_for_pool());
    assert_eq!((open_connections(&client), pool_waits(&client)), (1, 1));

    // Once the holder's connection is gone, there is room: a connect, not a wait.
    drop(holder);
    assert_eq!(waiter.advance(&client), Progress::Block);
    assert!(!waiter.waits_for_pool());
    waiter.prepare_without_waiting(&client);
    assert_eq!(open_connections(&client), 1);
    assert_eq!(waiter.advance(&client), Progress::Wait);

    // A wait still unanswered at the deadline ends as a blocking wait does.
    let mut late = client.start_get("late".to_owned()).unwrap();
    assert_eq!(late.advance(&client), Progress::Block);
    assert!(late.waits_for_pool());
    let error = late.finish(&client).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(error.to_string().contains("max_pool_size"), "{error}");
    assert_eq!(pool_waits(&client), 2);
}

#[test]
fn under_ignore_exc_a_set_that_timed_out_on_events_deletes_on_a_new_connection() {
    // The warm-up get is answered, the set is not; the next connection answers the cleanup.
    let server = FakeServer::start_each(vec![
        Fault::InTurn {
            replies: vec![b"END\r\n".to_vec()],
            then_close: false,
        },
        Fault::Reply(b"DELETED\r\n".to_vec()),
    ]);
    let client = warm_client(&server, {
        let mut custom = config();
        custom.ignore_exc = true;
        custom
    });
    let mut set = client
        .start_store(Store::Set, "k".to_owned(), 0, b"v".to_vec(), 0)
        .unwrap();
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match set.advance(&client) {
            Progress::Done => break,
            // The cleanup's new connection is made off the loop.
            Progress::Block => set.prepare(&client),
            _ => {
                assert!(std::time::Instant::now() < give_up, "no outcome");
                std::thread::yield_now();
            }
        }
    }
    assert_eq!(set.finish(&client).unwrap(), StoreReply::NotStored);
    server.wait_for_replies(2);
    assert_eq!(server.connections(), 2);
}
