"""``manage.py elasticache`` against a local cluster: the endpoint, mode and configuration
version, every node's state, round trip and stats; a node that does not answer and an
endpoint that does not answer said plainly; ``--json`` and ``--watch``."""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_elasticache_rs.local import LocalCluster, LocalNode

BACKEND = "django_elasticache_rs.backend.ElastiCache"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=3) as running:
        yield running


def run(*args: str, **caches: dict[str, Any]) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with override_settings(CACHES=caches or {"default": {"BACKEND": BACKEND}}):
        call_command("elasticache", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_every_node_of_a_discovered_cluster_with_its_stats(cluster: LocalCluster) -> None:
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": cluster.configuration_endpoint}}
    with override_settings(CACHES=caches):
        from django.core.cache import caches as handler

        handler["default"].set("seen", 1)
        assert handler["default"].get("seen") == 1
    text, _ = run(**caches)
    head = text.splitlines()[0]
    assert f"discovery via {cluster.configuration_endpoint}" in head
    assert f"configuration version {cluster.version}, 3 nodes" in head
    for address in cluster.addresses:
        [line] = [line for line in text.splitlines() if line.strip().startswith(address)]
        assert " up " in line and " ms " in line and "1.6" in line
    [report] = json.loads(run("--json", **caches)[0])
    assert (report["mode"], report["config_version"]) == ("discovery", cluster.version)
    nodes = {node["address"]: node for node in report["nodes"]}
    assert set(nodes) == set(cluster.addresses)
    holder = next(node for node in nodes.values() if node["curr_items"] == 1)
    assert holder["hit_ratio"] == 1.0
    for node in nodes.values():
        assert node["state"] == "up" and node["error"] is None
        assert 0 < node["round_trip"] < 5
        assert node["limit_maxbytes"] > 0 and node["curr_connections"] >= 1


def test_a_node_that_does_not_answer_is_said_so_and_the_others_are_shown() -> None:
    with LocalNode() as healthy, LocalNode() as frozen:
        caches = {
            "default": {
                "BACKEND": BACKEND,
                "LOCATION": [healthy.address, frozen.address],
                "OPTIONS": {"timeout": 0.3},
            }
        }
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            text, _ = run(**caches)
            [report] = json.loads(run("--json", **caches)[0])
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
    assert "static" in text.splitlines()[0]
    [frozen_line] = [line for line in text.splitlines() if frozen.address in line]
    assert "no answer" in frozen_line and "did not answer" in frozen_line
    nodes = {node["address"]: node for node in report["nodes"]}
    assert nodes[frozen.address]["state"] == "down"
    assert nodes[frozen.address]["round_trip"] is None
    assert nodes[healthy.address]["state"] == "up"


def test_an_endpoint_that_does_not_answer_is_said_so(cluster: LocalCluster) -> None:
    endpoint = cluster.configuration_endpoint
    cluster.stop_endpoint()
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": endpoint, "OPTIONS": {"timeout": 0.5}}}
    text, _ = run(**caches)
    assert "no node to ask" in text
    [report] = json.loads(run("--json", **caches)[0])
    assert report["nodes"] == [] and report["error"]


def test_watch_redraws_the_given_number_of_times(cluster: LocalCluster) -> None:
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": cluster.addresses[0]}}
    out, _ = run("--json", "--watch", "0.01", "--count", "3", **caches)
    reports = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(reports) == 3
    assert all(report[0]["mode"] == "single node" for report in reports)


def test_without_a_cache_using_the_backend_it_says_so() -> None:
    _, err = run(default={"BACKEND": "django.core.cache.backends.locmem.LocMemCache"})
    assert "No cache uses" in err
