//! `Client.metrics()`: the core's counters as the documented Python dict.

use elasticache_client::{Metrics, NodeMetrics};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// Seconds from microseconds, for latencies.
fn seconds(us: u64) -> f64 {
    // Exact enough: a latency sum past 2**53 µs (285 years) is not a concern.
    #[allow(clippy::cast_precision_loss)]
    let us = us as f64;
    us / 1e6
}

fn node_dict<'py>(py: Python<'py>, node: &NodeMetrics) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    let requests = PyDict::new(py);
    for (name, count) in &node.requests {
        requests.set_item(name, count)?;
    }
    dict.set_item("requests", requests)?;
    dict.set_item("hits", node.hits)?;
    dict.set_item("misses", node.misses)?;
    let errors = PyDict::new(py);
    let mut timeouts = 0;
    for (kind, count) in &node.errors {
        errors.set_item(kind, count)?;
        if *kind == "timeout" {
            timeouts = *count;
        }
    }
    dict.set_item("errors", errors)?;
    dict.set_item("timeouts", timeouts)?;
    dict.set_item("marked_down", node.marked_down)?;
    dict.set_item("coalesced", node.coalesced)?;
    dict.set_item("local_hits", node.local_hits)?;
    dict.set_item("connections_opened", node.connections_opened)?;
    dict.set_item("pool_waits", node.pool_waits)?;
    // Cumulative, as Prometheus' histograms are: each bound with the count at or under it.
    let buckets = PyList::empty(py);
    let mut cumulative = 0u64;
    for (bound, count) in &node.latency_buckets {
        cumulative = cumulative.saturating_add(*count);
        let bound = bound.map_or(f64::INFINITY, seconds);
        buckets.append((bound, cumulative))?;
    }
    let latency = PyDict::new(py);
    latency.set_item("buckets", buckets)?;
    latency.set_item("count", node.latency_count)?;
    latency.set_item("sum", seconds(node.latency_sum_us))?;
    dict.set_item("latency_seconds", latency)?;
    Ok(dict)
}

/// The metrics dict (see the README's "Observability" section for each field).
pub fn to_dict<'py>(py: Python<'py>, metrics: &Metrics) -> PyResult<Bound<'py, PyDict>> {
    let nodes = PyDict::new(py);
    for node in &metrics.nodes {
        nodes.set_item(&node.node, node_dict(py, node)?)?;
    }
    let dict = PyDict::new(py);
    dict.set_item("nodes", nodes)?;
    dict.set_item("discoveries", metrics.discoveries)?;
    dict.set_item("discovery_failures", metrics.discovery_failures)?;
    dict.set_item("membership_changes", metrics.membership_changes)?;
    dict.set_item("config_version", metrics.config_version)?;
    dict.set_item("ignored_failures", metrics.ignored_failures)?;
    dict.set_item("gutter_reads", metrics.gutter_reads)?;
    dict.set_item("gutter_writes", metrics.gutter_writes)?;
    dict.set_item("invalidations_replayed", metrics.invalidations_replayed)?;
    dict.set_item("invalidations_dropped", metrics.invalidations_dropped)?;
    dict.set_item("invalidation_overflows", metrics.invalidation_overflows)?;
    dict.set_item("invalidation_flushes", metrics.invalidation_flushes)?;
    dict.set_item("invalidations_waiting", metrics.invalidations_waiting)?;
    dict.set_item("warmup_reads", metrics.warmup_reads)?;
    dict.set_item("warmup_hits", metrics.warmup_hits)?;
    dict.set_item("warmup_copies", metrics.warmup_copies)?;
    dict.set_item("migration_reads", metrics.migration_reads)?;
    dict.set_item("migration_hits", metrics.migration_hits)?;
    dict.set_item("migration_copies", metrics.migration_copies)?;
    dict.set_item("detour_deletes", metrics.detour_deletes)?;
    dict.set_item("local_keys", metrics.local_keys)?;
    dict.set_item("local_bytes", metrics.local_bytes)?;
    dict.set_item("detour_delete_failures", metrics.detour_delete_failures)?;
    Ok(dict)
}
