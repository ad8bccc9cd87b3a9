//! Promises that hold under stress: a restarted node works at the first try, `timeout` bounds
//! a whole operation, a batch never waits for one pool while holding another's connections,
//! and memcached's refusal of a large value is a value too large.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use elasticache_client::{Client, ClientConfig, Error, ErrorKind, Progress};
use socket2::{Domain, Socket, Type};
use support::{key_on, wait_until, FakeServer, Fault, Memcached};

/// How long a test waits for a reply before it fails: a hang guard, not a speed target.
const PATIENCE: Duration = Duration::from_secs(10);

/// Fills `client`'s pool to `node` with at least `count` connections, by hammering it from
/// several threads until that many have been opened.
fn open_connections(client: &Arc<Client>, count: usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..count * 2)
        .map(|n| {
            let (client, stop) = (Arc::clone(client), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    client.get(&format!("warm-{n}")).unwrap();
                }
            })
        })
        .collect();
    wait_until("the pool to grow", || {
        client.topology().nodes()[0].open_connections() >= count
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().unwrap();
    }
}

#[test]
fn a_restarted_node_works_at_the_first_try_after_dead_timeout() {
    let mut node = Memcached::start();
    let config = {
        let mut custom = ClientConfig::default();
        custom.retry_attempts = 1;
        custom.dead_timeout = Duration::from_millis(100);
        custom
    };
    let client = Arc::new(Client::connect_to(&[node.address()], config).unwrap());
    open_connections(&client, 4);
    client.set("kept", 0, b"before", 0).unwrap();

    node.restart();
    // The first request meets a dead pooled connection: one failure marks the node down, and
    // closes every other idle connection with it.
    let first = client.get("kept").unwrap_err();
    assert!(first.is_connection_lost(), "{first}");
    assert_eq!(client.topology().nodes()[0].open_connections(), 0);
    // Fast failures while the node is marked down; the first real try after that succeeds.
    let mut fast_failures = 0;
    wait_until("the node to be tried again", || match client.get("kept") {
        Err(Error::NodeDown { .. }) => {
            fast_failures += 1;
            false
        }
        Ok(found) => {
            assert_eq!(found, None, "a restarted memcached is empty");
            true
        }
        Err(other) => panic!("the first try after dead_timeout failed: {other}"),
    });
    assert!(fast_failures > 0, "the node was never marked down");
    client.set("after", 0, b"restart", 0).unwrap();
}

#[test]
fn connections_idle_across_a_restart_are_checked_before_reuse() {
    let mut node = Memcached::start();
    let client = Arc::new(Client::connect_to(&[node.address()], ClientConfig::default()).unwrap());
    open_connections(&client, 3);
    node.restart();
    // Connections idle this long are probed before reuse (the precondition of this test, not a
    // wait for anything to happen).
    thread::sleep(Duration::from_millis(1100));
    // Every pooled connection is dead, yet not one request fails.
    for i in 0..10 {
        client.set(&format!("k{i}"), 0, b"v", 0).unwrap();
    }
    assert_eq!(client.get("k9").unwrap().unwrap().data.as_ref(), b"v");
}

#[test]
fn timeout_bounds_the_whole_reply_not_each_read() {
    // Every byte comes well within the timeout; the whole reply takes ten times as long.
    let reply = b"VALUE k 0 5\r\nhello\r\nEND\r\n".to_vec();
    let server = FakeServer::start(Fault::Trickle(Duration::from_millis(40), reply));
    let config = {
        let mut custom = ClientConfig::default();
        custom.timeout = Some(Duration::from_millis(100));
        custom
    };
    let client = Client::connect_to(&[server.address()], config).unwrap();
    let error = client.get("k").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
}

#[test]
fn the_operation_deadline_bounds_a_connect_that_is_never_accepted() {
    // A listener that never accepts, its backlog full: further connects get no answer at all.
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    listener.listen(0).unwrap();
    let address = listener.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    let filled = (0..64).any(|_| {
        match std::net::TcpStream::connect_timeout(&address, Duration::from_millis(100)) {
            Ok(stream) => {
                held.push(stream);
                false
            }
            Err(_) => true,
        }
    });
    assert!(
        filled,
        "the kernel accepted every connect: cannot build the fault"
    );
    // No connect timeout of its own (the OS would retry for minutes): the operation's
    // `timeout` is what ends it.
    let config = {
        let mut custom = ClientConfig::default();
        custom.connect_timeout = None;
        custom.timeout = Some(Duration::from_millis(100));
        custom
    };
    let client = Client::connect_to(&[address.to_string()], config).unwrap();
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || sender.send(client.get("k")));
    let outcome = receiver
        .recv_timeout(PATIENCE)
        .expect("the get outlived its deadline (hang guard)");
    let error = outcome.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
}

#[test]
fn a_batch_never_holds_one_node_while_waiting_for_another() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let config = {
        let mut custom = ClientConfig::default();
        custom.max_pool_size = 1;
        custom.timeout = Some(Duration::from_secs(5));
        custom
    };
    let client = Arc::new(Client::connect_to(&[a.address(), b.address()], config).unwrap());
    let (key_a, key_b) = (key_on(&client, 0), key_on(&client, 1));
    client.set(&key_a, 0, b"a", 0).unwrap();
    client.set(&key_b, 0, b"b", 0).unwrap();

    // Node B's only connection is taken by an exchange that is not closed yet (a get whose
    // reply came at once is done and gives its connection back: try again).
    let mut holding = None;
    wait_until("a pending get on node B", || {
        let mut get = client.start_get(key_b.clone()).unwrap();
        if get.advance(&client) == Progress::Wait {
            holding = Some(get);
        }
        holding.is_some()
    });
    let holding_b = holding.unwrap();
    let batch = {
        let (client, keys) = (Arc::clone(&client), [key_a.clone(), key_b.clone()]);
        thread::spawn(move || {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            client.get_many(&keys)
        })
    };
    // While the batch waits for B, A's connection is free: it did not keep it.
    wait_until("node A's connection to be free", || {
        let mut get = client.start_get(key_a.clone()).unwrap();
        match get.advance(&client) {
            Progress::Block => false,
            Progress::Done => get.finish(&client).unwrap().is_some(),
            _ => {
                support::drive(&client, &mut get);
                get.finish(&client).unwrap().is_some()
            }
        }
    });
    assert!(!batch.is_finished(), "the batch got B's connection early");
    drop(holding_b);
    let values = batch.join().unwrap().unwrap();
    let values: Vec<Option<Vec<u8>>> = values
        .into_iter()
        .map(|item| item.map(|i| i.data.to_vec()))
        .collect();
    assert_eq!(values, vec![Some(b"a".to_vec()), Some(b"b".to_vec())]);
}

#[test]
fn a_value_memcached_refuses_as_too_large_is_a_value_too_large() {
    let node = Memcached::start();
    let client = node.client();
    client.set("big", 0, b"old", 0).unwrap();
    // Under the client's cap (1 MiB + 64 KiB), over memcached's 1 MiB item size.
    let value = vec![b'x'; 1024 * 1024 + 1];
    let error = client.set("big", 0, &value, 0).unwrap_err();
    assert!(
        matches!(error, Error::TooLargeForNode { size, .. } if size == value.len()),
        "{error}"
    );
    assert!(error.is_value_too_large());
    assert_eq!(client.get("big").unwrap(), None, "the old value must go");

    let tolerant = Client::connect_to(&[node.address()], {
        let mut custom = ClientConfig::default();
        custom.ignore_exc = true;
        custom
    })
    .unwrap();
    tolerant.set("big", 0, b"old", 0).unwrap();
    assert!(!tolerant.set("big", 0, &value, 0).unwrap());
    assert!(!tolerant.set("big", 0, &vec![b'x'; 4 << 20], 0).unwrap());
    assert_eq!(tolerant.get("big").unwrap(), None);
    let failed = tolerant
        .set_many(&[("small", 0, b"s"), ("big", 0, &value)], 0)
        .unwrap();
    assert_eq!(failed, vec![1]);
}
