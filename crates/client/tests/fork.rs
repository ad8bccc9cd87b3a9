//! A Rust program that forks (no Python involved): the child, and its own child, each open
//! their own connections and never touch the ones they inherited; the parent's pooled
//! connection keeps working. A local tier (`local_cache`) is the process's own likewise: a
//! child starts with an empty one.
//!
//! The only test of its binary: a child inherits the locks other threads hold at the fork, so
//! no other test may be running beside it.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, unsafe_code)]

mod support;

use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use elasticache_client::{Client, ClientConfig, LocalCache, Topology};
use support::Memcached;

/// How long a forked process may take before the test gives up on it (its operations have
/// the client's own timeouts: this only bounds a hang).
const CHILD_BOUND: Duration = Duration::from_secs(30);

/// Runs `body` in a forked child, which exits with 0 if it returned and 1 if it panicked,
/// without running anything of the test harness.
fn fork(body: impl FnOnce()) -> libc::pid_t {
    // SAFETY: fork has no preconditions; the child only runs `body` and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let status = match panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(()) => 0,
            Err(payload) => {
                // The harness captures panic messages in this process's memory, where the
                // parent never sees them: say it on stderr itself.
                let message = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                let _ = writeln!(
                    std::io::stderr(),
                    "forked child {}: {message}",
                    std::process::id()
                );
                1
            }
        };
        // SAFETY: ends the child at once, as a forked child of a test harness must.
        unsafe { libc::_exit(status) };
    }
    pid
}

/// The exit status of the forked process `pid`, waited for at most [`CHILD_BOUND`].
fn exit_status(pid: libc::pid_t) -> i32 {
    let (done, status) = mpsc::channel();
    thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid place to write.
        let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = done.send((waited, status));
    });
    let Ok((waited, status)) = status.recv_timeout(CHILD_BOUND) else {
        // SAFETY: kills our own child, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("forked process {pid} did not exit within {CHILD_BOUND:?}");
    };
    assert_eq!(waited, pid, "waitpid failed");
    assert!(
        libc::WIFEXITED(status),
        "forked process {pid} died: {status}"
    );
    libc::WEXITSTATUS(status)
}

/// In a process that inherited `client` and `inherited`, the snapshot it was using: the
/// client gets a snapshot of its own with a fresh pool, and keeps it.
fn use_after_fork(client: &Client, inherited: &Arc<Topology>, prefix: &str) -> Arc<Topology> {
    assert!(!inherited.belongs_to_this_process());
    let old = Arc::clone(&inherited.nodes()[0]);
    let old_counts = (old.connections_opened(), old.open_connections());
    assert_eq!(
        old_counts.1, 1,
        "the inherited pool holds one idle connection"
    );

    assert_eq!(
        client.get("parent").unwrap().map(|item| item.data.to_vec()),
        Some(b"before fork".to_vec())
    );
    let own = client.topology();
    assert!(own.belongs_to_this_process());
    assert!(!Arc::ptr_eq(&own, inherited));
    assert!(!Arc::ptr_eq(&own.nodes()[0], &old));
    assert_eq!(own.nodes()[0].connections_opened(), (1, 0));
    for i in 0..50 {
        let key = format!("{prefix}-{i}");
        assert!(client.set(&key, 0, key.as_bytes(), 0).unwrap());
        assert_eq!(
            client.get(&key).unwrap().map(|item| item.data.to_vec()),
            Some(key.clone().into_bytes())
        );
    }
    // One snapshot and one connection from then on.
    assert!(Arc::ptr_eq(&own, &client.topology()));
    assert_eq!(own.nodes()[0].connections_opened(), (1, 0));
    assert_eq!(own.nodes()[0].open_connections(), 1);
    // The inherited pool was never drawn on (nor its connection closed).
    assert_eq!(
        (old.connections_opened(), old.open_connections()),
        old_counts
    );
    own
}

#[test]
fn forked_children_use_their_own_connections_and_the_parent_keeps_its_own() {
    let node = Memcached::start();
    let client = node.client();
    assert!(client.set("parent", 0, b"before fork", 0).unwrap());
    let topology = client.topology();
    assert!(topology.belongs_to_this_process());
    let parent_node = Arc::clone(&topology.nodes()[0]);
    assert_eq!(parent_node.connections_opened(), (1, 0));
    assert_eq!(parent_node.open_connections(), 1);
    let mut tiered = ClientConfig::default();
    let mut local = LocalCache::default();
    local.min_reads_per_second = 0;
    local.ttl = Duration::from_secs(600);
    tiered.local_cache = Some(local);
    let tiered = Client::connect_to(&[node.address()], tiered).unwrap();
    assert!(tiered.get("parent").unwrap().is_some());
    assert_eq!(tiered.metrics().local_keys, 1);

    // (This read opens a connection of its own, counted from here on.)
    let before = node.stat("total_connections");

    let child = fork(|| {
        // The parent's tier is not the child's: it starts empty, and fills as the child reads.
        assert_eq!(tiered.metrics().local_keys, 0);
        assert!(tiered.get("parent").unwrap().is_some());
        assert_eq!(tiered.metrics().local_keys, 1);
        let own = use_after_fork(&client, &topology, "child");
        // A fork of a fork is told apart from its parent just the same.
        let grandchild = fork(|| {
            use_after_fork(&client, &own, "grandchild");
        });
        assert_eq!(exit_status(grandchild), 0, "the grandchild failed");
        // The child's own connection is still there, and still works, after its fork.
        assert!(Arc::ptr_eq(&own, &client.topology()));
        assert_eq!(
            client
                .get("grandchild-49")
                .unwrap()
                .map(|item| item.data.to_vec()),
            Some(b"grandchild-49".to_vec())
        );
        assert_eq!(own.nodes()[0].connections_opened(), (1, 0));
    });
    // The parent keeps working while the child runs.
    for i in 0..50 {
        let key = format!("parent-{i}");
        assert!(client.set(&key, 0, key.as_bytes(), 0).unwrap());
        assert!(client.get(&key).unwrap().is_some());
    }
    assert_eq!(exit_status(child), 0, "the child failed (see its stderr)");

    // Still the parent's snapshot and its one pooled connection.
    assert!(Arc::ptr_eq(&topology, &client.topology()));
    assert!(topology.belongs_to_this_process());
    assert_eq!(parent_node.connections_opened(), (1, 0));
    assert_eq!(parent_node.open_connections(), 1);
    assert_eq!(
        client
            .get("child-49")
            .unwrap()
            .map(|item| item.data.to_vec()),
        Some(b"child-49".to_vec())
    );
    // The server saw one new connection from the child, one from the grandchild and the one
    // this read opens, and one the child's tiered client opened: none of the forked processes
    // reused an inherited one.
    assert_eq!(node.stat("total_connections") - before, 4);
    assert_eq!(
        tiered.metrics().local_keys,
        1,
        "the parent's tier is its own"
    );
}
