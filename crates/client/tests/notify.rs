//! Events handed to the configured sink: membership changes with what changed, a node marked
//! down and answering again, each once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use elasticache_client::{Client, ClientConfig, Event, EventSink, NodeAddress};
use support::{FakeServer, Fault, Memcached};

fn recording() -> (EventSink, Arc<Mutex<Vec<Event>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let seen = Arc::clone(&seen);
        EventSink::new(move |event| seen.lock().unwrap().push(event.clone()))
    };
    (sink, seen)
}

#[test]
fn membership_changes_say_what_changed() {
    let (a, b) = (Memcached::start(), Memcached::start());
    let (sink, seen) = recording();
    let mut config = ClientConfig::default();
    config.events = Some(sink);
    let client = Client::connect_to(&[a.address()], config).unwrap();
    let both: Vec<NodeAddress> = [a.address(), b.address()]
        .iter()
        .map(|s| NodeAddress::parse(s).unwrap())
        .collect();
    client.set_nodes(&both, Some(2));
    client.set_nodes(&both, Some(3)); // the same nodes: no change to tell
    let events = seen.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            Event::MembershipChanged {
                added: vec![b.address()],
                removed: vec![],
                version: Some(2),
            },
            Event::WarmupStarted {
                window: Duration::from_secs(60),
            },
        ]
    );
}

#[test]
fn a_node_marked_down_and_answering_again_is_told_once_each() {
    let server = FakeServer::start(Fault::InTurn {
        replies: vec![
            b"END\r\n".to_vec(),
            b"garbage\r\n".to_vec(),
            b"END\r\n".to_vec(),
        ],
        then_close: false,
    });
    let (sink, seen) = recording();
    let mut config = ClientConfig::default();
    config.events = Some(sink);
    config.retry_attempts = 1;
    config.dead_timeout = Duration::ZERO;
    let client = Client::connect_to(&[server.address()], config).unwrap();
    assert_eq!(client.get("a").unwrap(), None);
    assert!(client.get("b").is_err()); // garbage: marked down (for no time at all)
    assert_eq!(client.get("c").unwrap(), None); // a new connection answers: up again
    let events = seen.lock().unwrap().clone();
    assert_eq!(
        events,
        vec![
            Event::NodeDown {
                node: server.address(),
                failures: 1,
                retry_in: Duration::ZERO,
            },
            Event::NodeUp {
                node: server.address()
            },
        ]
    );
}
