"""OpenTelemetry: a CLIENT span per cache call with the database semantic conventions, and the
client's counters as OpenTelemetry metrics, read back from the real SDK's in-memory exporters
(in a fresh interpreter: the SDK's providers are set once per process)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster, LocalNode

APP = Path(__file__).parent / "support" / "otel_app.py"
FAILURE_APP = Path(__file__).parent / "support" / "otel_failure_app.py"


def run(addresses: list[str]) -> Any:
    done = subprocess.run(
        [sys.executable, str(APP), *addresses],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_client_span_per_call_and_the_counters_as_metrics(
    memcached_cluster: LocalCluster,
) -> None:
    seen = run(memcached_cluster.addresses)
    spans, versioned = seen["spans"][:6], seen["spans"][6:]
    assert [span["name"] for span in spans] == ["set", "get", "get_many", "get", "get", "set"]
    # A call's own version places its key: the span names that node.
    assert [span["name"] for span in versioned] == ["set", "get"]
    for span in versioned:
        address = f"{span['attributes']['server.address']}:{span['attributes']['server.port']}"
        assert address == seen["versioned_node"]
    assert all(span["kind"] == "CLIENT" for span in spans)
    assert all(span["attributes"]["db.system.name"] == "memcached" for span in spans)
    single = [span for span in spans if span["name"] != "get_many" and span["status"] == "UNSET"]
    for span in single:
        address = f"{span['attributes']['server.address']}:{span['attributes']['server.port']}"
        assert address in memcached_cluster.addresses
    [batch] = [span for span in spans if span["name"] == "get_many"]
    assert batch["attributes"]["db.operation.batch.size"] == 3
    assert "server.address" not in batch["attributes"]
    [failed] = [span for span in spans if span["status"] == "ERROR"]
    assert failed["attributes"]["error.type"] == seen["failed"]
    # No key or value anywhere.
    assert "present" not in json.dumps(spans)

    points = seen["points"]
    lookups = {p[0]["outcome"]: 0 for p in points["elasticache.lookups"]}
    for attributes, value in points["elasticache.lookups"]:
        lookups[attributes["outcome"]] += value
    assert lookups == {"hit": 3, "miss": 2}
    by_command: dict[str, int] = {}
    for attributes, value in points["elasticache.requests"]:
        command = attributes["db.operation.name"]
        by_command[command] = by_command.get(command, 0) + value
    # The failing get sent nothing; a batch counts once per node it touched.
    same = ElastiCache(memcached_cluster.addresses, {"OPTIONS": {"discovery": "off"}})
    touched = {
        same._native.node_for(key, same._prefix, same.version)
        for key in ("present", "absent", "other")
    }
    assert (by_command["get"], by_command["set"], by_command["get_many"]) == (2, 2, len(touched))
    # What the clients hold now, as gauges: the second alias's local tier keeps one key.
    gauges = seen["gauges"]
    assert gauges["elasticache.local_keys"] == [[{}, 1]]
    [[_, kept_bytes]] = gauges["elasticache.local_bytes"]
    assert kept_bytes >= 1000


def test_without_tracing_the_methods_are_the_plain_ones(memcached_cluster: LocalCluster) -> None:
    cache = ElastiCache(memcached_cluster.addresses, {"OPTIONS": {"discovery": "off"}})
    assert cache.get.__func__ is ElastiCache.get  # type: ignore[attr-defined]
    assert cache.aget.__func__ is ElastiCache.aget  # type: ignore[attr-defined]


def test_a_failed_call_records_its_error_type_but_never_the_message_naming_the_key(
    memcached: LocalNode,
) -> None:
    done = subprocess.run(
        [sys.executable, str(FAILURE_APP), memcached.address],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # The exceptions raised name the key (Django's message for incr of a missing key, the
    # invalid key's): what the spans must leave out.
    assert seen["raised"] == [
        ["ValueError", "Key 'secret-key-name' not found"],
        ["ValueError", "Key 'secret-key-name' not found"],
        ["InvalidKeyError", seen["raised"][2][1]],
    ]
    assert "secret key name" in seen["raised"][2][1]
    failed = [span for span in seen["spans"] if span["status"] == "ERROR"]
    assert [span["name"] for span in failed] == ["incr", "incr", "get"]
    for span, error_type in zip(
        failed, ("ValueError", "ValueError", "InvalidKeyError"), strict=True
    ):
        assert span["attributes"]["error.type"] == error_type
        assert span["description"] == error_type
        [event] = span["events"]
        assert event["name"] == "exception"
        assert event["attributes"]["exception.type"].endswith(error_type)
        assert "exception.message" not in event["attributes"]
        assert event["attributes"]["exception.stacktrace"].rstrip().endswith(error_type)
    # Nowhere in any span: status, attributes, events.
    assert "secret" not in json.dumps(seen["spans"])
