//! The gutter: where a key goes while its owner cannot serve it (marked down, paused after a
//! failure, or holding invalidations not yet replayed), and how long a value lives there.
//!
//! The gutter of a key is the next available node in the key's rendezvous order: each node
//! other than the owner scores `murmur3(name + "-" + key)` (pymemcache's score) and the highest
//! wins, a tie going to the greater name. Under `hashing="pymemcache"` that is exactly the
//! next live node of the key's own order; under libmemcached's placements it is the same
//! deterministic choice among the nodes the ring did not pick. The ring itself never changes:
//! once the owner serves again, its keys go back to it (Meta's memcache, NSDI 2013, "gutter
//! pool"; mcrouter's `FailoverRoute`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::hash::Murmur3;
use crate::topology::Node;

/// memcached takes an expiry above this many seconds as a Unix time.
const RELATIVE_EXPIRY_LIMIT: i64 = 60 * 60 * 24 * 30;

/// Whether `node` can serve its keys now: not marked down or paused, and no invalidation of
/// it waits to be replayed (its reads must not come back before that).
pub(crate) fn serves(node: &Node) -> bool {
    node.health.down_for().is_none() && !node.invalidations.pending()
}

/// The gutter of `key`, whose owner (index `owner` in `nodes`) cannot serve it: the available
/// node other than the owner that scores highest for the key; `None` when none is available.
pub(crate) fn gutter_for(nodes: &[Arc<Node>], key: &str, owner: usize) -> Option<usize> {
    let mut best: Option<(u32, &str, usize)> = None;
    for (index, node) in nodes.iter().enumerate() {
        if index == owner || !serves(node) {
            continue;
        }
        let name = node.address.name.as_str();
        let score = score(name, key);
        let better = match best {
            None => true,
            Some((top, top_name, _)) => score > top || (score == top && name > top_name),
        };
        if better {
            best = Some((score, name, index));
        }
    }
    best.map(|(_, _, index)| index)
}

/// pymemcache's rendezvous score of `key` on the node `name`.
fn score(name: &str, key: &str) -> u32 {
    let mut hasher = Murmur3::default();
    hasher.write_str(name);
    hasher.push(b'-');
    hasher.write_str(key);
    hasher.finish()
}

/// `exptime` (memcached's: 0 never, up to 30 days relative, beyond that a Unix time, negative
/// already expired) capped at `ttl` seconds from now, as a gutter stores it.
pub(crate) fn cap_exptime(exptime: i64, ttl: u32) -> i64 {
    let ttl = i64::from(ttl);
    if exptime < 0 {
        return exptime;
    }
    if exptime == 0 {
        return ttl;
    }
    if exptime <= RELATIVE_EXPIRY_LIMIT {
        return exptime.min(ttl);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        });
    match exptime.checked_sub(now) {
        // Already past: memcached expires it at once, as it would have anyway.
        Some(left) if left <= 0 => exptime,
        Some(left) => left.min(ttl),
        None => ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;
    use crate::config::ClientConfig;
    use crate::hash::{Hashing, Ring};
    use crate::topology::Topology;

    fn topology(count: u16) -> Topology {
        let addresses: Vec<NodeAddress> = (0..count)
            .map(|i| {
                NodeAddress::parse(&format!("10.0.0.{i}:11211")).unwrap_or_else(|_| unreachable!())
            })
            .collect();
        Topology::new(&addresses, &ClientConfig::default(), None, None)
    }

    #[test]
    fn the_gutter_is_the_next_node_of_the_keys_rendezvous_order() {
        let topology = topology(5);
        let nodes = topology.nodes();
        for i in 0..500 {
            let key = format!("key:{i}");
            let mut order: Vec<usize> = (0..nodes.len()).collect();
            order.sort_by_key(|&n| {
                let name = nodes[n].address.name.as_str();
                std::cmp::Reverse((score(name, &key), name.to_owned()))
            });
            let owner = topology.node_index_for(&key);
            assert_eq!(owner, order.first().copied(), "the ring is rendezvous");
            assert_eq!(gutter_for(nodes, &key, order[0]), Some(order[1]));
        }
    }

    #[test]
    fn gutters_skip_nodes_that_cannot_serve_and_spread_the_keys() {
        let topology = topology(4);
        let nodes = topology.nodes();
        // The second choice of every key is down too: its keys go to the third.
        nodes[1].health.record_failure(
            1,
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(60),
        );
        let mut used = [0usize; 4];
        for i in 0..400 {
            let key = format!("k{i}");
            let gutter = gutter_for(nodes, &key, 0);
            let gutter = gutter.unwrap_or(usize::MAX);
            assert!(gutter == 2 || gutter == 3, "{key} went to {gutter}");
            used[gutter] += 1;
        }
        assert!(used[2] > 100 && used[3] > 100, "spread: {used:?}");
        let ring = Ring::with_hashing(Hashing::Ketama, &topology.addresses());
        let owner = ring.node_for("some key").unwrap_or_default();
        assert_eq!(
            gutter_for(nodes, "some key", owner),
            gutter_for(nodes, "some key", owner),
            "deterministic under libmemcached's placements too"
        );
    }

    #[test]
    fn no_gutter_without_another_node() {
        let topology = topology(1);
        assert_eq!(gutter_for(topology.nodes(), "k", 0), None);
    }

    #[test]
    fn gutter_expiry_never_outlives_the_values_own() {
        assert_eq!(cap_exptime(0, 10), 10, "never expires: the gutter's");
        assert_eq!(cap_exptime(5, 10), 5);
        assert_eq!(cap_exptime(3600, 10), 10);
        assert_eq!(cap_exptime(-1, 10), -1, "expired at once stays so");
        let now = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(cap_exptime(now + 3600, 10), 10, "a Unix time far off");
        let soon = cap_exptime(now + 4, 10);
        assert!((3..=4).contains(&soon), "a Unix time 4 s off: {soon}");
    }
}
