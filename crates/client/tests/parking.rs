//! Replays parked around a fork (`park_background_threads`), against real memcached processes.
//!
//! The only test of its binary: parking stops every replay thread of the process, which would
//! hold up another test's replay running beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use elasticache_client::{park_background_threads, Client};
use support::{freezing_config, key_on, wait_until, Memcached, Thaw};

#[test]
fn replays_are_parked_around_a_fork_and_resume_after_it() {
    let (owner, other) = (Memcached::start(), Memcached::start());
    let client =
        Client::connect_to(&[owner.address(), other.address()], freezing_config()).unwrap();
    let key = key_on(&client, 0);
    assert!(client.set(&key, 0, b"old", 0).unwrap());
    owner.signal("STOP");
    let thaw = Thaw(&owner);
    client.delete(&key).unwrap();
    // Parked (as around a fork) while the node is frozen: the replay thread stops, undelivered.
    let parked = park_background_threads();
    drop(thaw);
    assert_eq!(
        client.metrics().invalidations_waiting,
        1,
        "kept while parked"
    );
    assert_eq!(
        client.get(&key).unwrap(),
        None,
        "still on the gutter, no replay runs"
    );
    assert_eq!(client.metrics().invalidations_waiting, 1);
    drop(parked);
    // The first operation after the parking starts the replay again.
    assert_eq!(client.get(&key).unwrap(), None);
    wait_until("the replay resumes after the parking", || {
        client.metrics().invalidations_waiting == 0
    });
    assert_eq!(owner.client().get(&key).unwrap(), None);
}
