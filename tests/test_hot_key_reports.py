"""``manage.py elasticache --hot-keys`` (issue 23): the command runs in a process of its own,
with no traffic, so the workers write their hot keys into the cluster
(``OPTIONS["hot_keys_report"]``) and it merges them. Shown with two worker processes reading a
Zipf workload against real memcached: the command finds their top keys, with both workers'
rates summed; a worker writes its report at most once per interval; with no reports, the
command says how to get them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.test import override_settings

from django_elasticache_rs import hot_key_reports
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support.backends import own_backend

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKEND = "django_elasticache_rs.backend.ElastiCache"


def caches_setting(cluster: LocalCluster, prefix: str) -> dict[str, Any]:
    """The command's settings: the workers' cache, without reports of its own."""
    return {
        "default": {
            "BACKEND": BACKEND,
            "LOCATION": cluster.addresses,
            "KEY_PREFIX": prefix,
            "OPTIONS": {"discovery": "off"},
        }
    }


def command(cluster: LocalCluster, prefix: str, *args: str) -> str:
    out = io.StringIO()
    with override_settings(CACHES=caches_setting(cluster, prefix)):
        call_command("elasticache", "--hot-keys", *args, stdout=out)
    return out.getvalue()


def test_the_command_merges_the_workers_reports(memcached_cluster: LocalCluster) -> None:
    prefix = f"reports-{uuid.uuid4().hex[:8]}"
    ElastiCache(memcached_cluster.addresses, {"KEY_PREFIX": prefix}).set_many(
        {f"item:{i}": "x" * (10 + i) for i in range(300)}
    )
    counts: Counter[str] = Counter()
    # Two workers reading the same workload: their ranking is the workload's, their rates add.
    for _ in range(2):
        worker = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.hot_key_worker",
                ";".join(memcached_cluster.addresses),
                prefix,
                "23",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        counts.update(json.loads(worker.stdout))
    [shown] = json.loads(command(memcached_cluster, prefix, "5", "--json"))
    assert shown["alias"] == "default"
    assert (shown["workers"], shown["hosts"]) == (2, 1)
    expected = [key for key, _ in counts.most_common(5)]
    assert [entry["key"] for entry in shown["hot_keys"]] == expected
    with override_settings(CACHES=caches_setting(memcached_cluster, prefix)):
        from django.core.cache import caches

        reports = hot_key_reports.read(caches["default"].handle)
    assert len(reports) == 2
    for entry in shown["hot_keys"]:
        assert entry["workers"] == 2
        assert entry["version"] == 1
        rates = [
            hot["reads_per_second"]
            for report in reports
            for hot in report["hot"]
            if hot["key"] == entry["key"]
        ]
        assert entry["reads_per_second"] == sum(rates) > 0
    # The largest values read: item:299 is the largest of the 300.
    sizes = [entry["bytes"] for entry in shown["largest_values"]]
    assert sizes == sorted(sizes, reverse=True)
    text = command(memcached_cluster, prefix, "3")
    assert "hot keys reported by 2 workers on 1 host " in text
    for key in expected[:3]:
        assert key in text


def test_a_worker_reports_at_most_once_per_interval(memcached_cluster: LocalCluster) -> None:
    cache = own_backend(memcached_cluster.addresses, "reports", hot_keys_report=600)

    def sets() -> int:
        return sum(node["requests"].get("set", 0) for node in cache.metrics()["nodes"].values())

    cache.get("anything")
    before = sets()
    cache.close()
    assert sets() == before + 1
    cache.close()
    cache.close()
    assert sets() == before + 1
    [report] = hot_key_reports.read(cache.handle)
    assert report["interval"] == 600


def test_without_reports_the_command_says_how_to_get_them(memcached_cluster: LocalCluster) -> None:
    text = command(memcached_cluster, f"reports-{uuid.uuid4().hex[:8]}")
    assert "no worker reports its hot keys" in text
    assert "OPTIONS['hot_keys_report']" in text
