"""``manage.py elasticache`` against a local cluster: the endpoint, mode and configuration
version, every node's state, round trip and stats; a node that does not answer and an
endpoint that does not answer said plainly; ``--json`` and ``--watch`` (never under a
second); an alias that is not ours refused plainly; what a server sends shown without the
control characters a terminal would act on."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_elasticache_rs.local import LocalCluster, LocalNode
from django_elasticache_rs.management.commands import elasticache as elasticache_command
from django_elasticache_rs.status import report
from tests.support.faults import LoopbackServer
from tests.support.processes import freeze

BACKEND = "django_elasticache_rs.backend.ElastiCache"


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes=3) as running:
        yield running


def run(*args: str, status: int = 0, **caches: dict[str, Any]) -> tuple[str, str]:
    """The command's output; it must end with exit status ``status`` (a ``CommandError`` with
    that ``returncode`` after the report, unless 0)."""
    out, err = io.StringIO(), io.StringIO()
    with override_settings(CACHES=caches or {"default": {"BACKEND": BACKEND}}):
        try:
            call_command("elasticache", *args, stdout=out, stderr=err)
        except CommandError as error:
            if not status or error.returncode != status:
                raise
        else:
            assert status == 0, f"exit status 0, not {status}"
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
        freeze(frozen.pid)
        try:
            text, _ = run(status=2, **caches)
            [report] = json.loads(run("--json", status=2, **caches)[0])
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
    text, _ = run(status=3, **caches)
    assert "no node to ask" in text
    [report] = json.loads(run("--json", status=3, **caches)[0])
    assert report["nodes"] == [] and report["error"]


def test_watch_redraws_the_given_number_of_times(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pauses between reports are recorded rather than slept.
    slept: list[float] = []
    monkeypatch.setattr(elasticache_command, "time", SimpleNamespace(sleep=slept.append))
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": cluster.addresses[0]}}
    out, _ = run("--json", "--watch", "1.5", "--count", "3", **caches)
    reports = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(reports) == 3
    assert all(report[0]["mode"] == "single node" for report in reports)
    assert slept == [1.5, 1.5]
    # Each report says when it was made.
    assert all(report[0]["time"].endswith("+00:00") for report in reports)
    text, _ = run("--watch", "1", "--count", "2", **caches)
    assert [line for line in text.splitlines() if line.startswith("--- ")] == [
        line
        for line in text.splitlines()
        if line.startswith("--- ") and line.endswith("+00:00 ---")
    ]
    assert sum(line.startswith("--- ") for line in text.splitlines()) == 2


@pytest.mark.parametrize("seconds", ["0", "-1", "0.5", "nan", "inf"])
def test_watch_under_a_second_or_not_finite_is_refused(
    memcached: LocalNode, monkeypatch: pytest.MonkeyPatch, seconds: str
) -> None:
    # 0 asked every node for its stats in a loop; a negative interval crashed in time.sleep
    # after the first report. (Pauses recorded, not slept: the code before the check slept.)
    slept: list[float] = []
    monkeypatch.setattr(elasticache_command, "time", SimpleNamespace(sleep=slept.append))
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": memcached.address}}
    out = io.StringIO()
    with (
        override_settings(CACHES=caches),
        pytest.raises(CommandError, match="--watch must be at least 1 second"),
    ):
        call_command("elasticache", "--watch", seconds, "--count", "2", stdout=out)
    assert out.getvalue() == "" and slept == []
    with override_settings(CACHES=caches), pytest.raises(CommandError, match="--count"):
        call_command("elasticache", "--watch", "1", "--count", "0", stdout=out)


def test_an_alias_that_is_not_one_of_ours_is_a_command_error(memcached: LocalNode) -> None:
    caches = {
        "default": {"BACKEND": BACKEND, "LOCATION": memcached.address},
        "local": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    with pytest.raises(CommandError, match=r"Cache 'local' does not use .*those that do: default"):
        run("local", **caches)
    with pytest.raises(CommandError, match="No cache 'missing' in CACHES"):
        run("default", "missing", **caches)
    # Ours still reports.
    assert "single node" in run("default", **caches)[0]


class ScriptedNode(LoopbackServer):
    """A fake memcached that answers ``stats`` and ``version`` with the bytes given (what a
    hostile or broken server could send), and anything else with ``ERROR``."""

    def __init__(self, stats: bytes, version: bytes) -> None:
        self.stats, self.version = stats, version
        super().__init__()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        pending = b""
        while data := conn.recv(65536):
            pending += data
            while b"\r\n" in pending:
                line, pending = pending.split(b"\r\n", 1)
                if line.startswith(b"stats"):
                    conn.sendall(self.stats)
                elif line.startswith(b"version"):
                    conn.sendall(self.version)
                else:
                    conn.sendall(b"ERROR\r\n")


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_control_characters_a_server_sends_are_shown_escaped() -> None:
    # Clear the screen, set the terminal's title, ring the bell: in a node's version, and in
    # the error message of a node that refuses stats.
    hostile = b"\x1b[2J\x1b]0;owned\x07"
    versioned = ScriptedNode(
        b"STAT pid 1\r\nSTAT version 1.6.0" + hostile + b"\r\nSTAT uptime 5\r\nEND\r\n",
        b"VERSION 1.6.0" + hostile + b"\r\n",
    )
    refusing = ScriptedNode(b"SERVER_ERROR no" + hostile + b"\r\n", b"VERSION 1.6.0\r\n")
    try:
        caches = {
            "default": {
                "BACKEND": BACKEND,
                "LOCATION": [versioned.address, refusing.address],
                "OPTIONS": {"discovery": "off"},
            }
        }
        text, _ = run(status=2, **caches)
        dumped, _ = run("--json", status=2, **caches)
        with override_settings(CACHES=caches):
            from django.core.cache import caches as handler

            # The report the admin page renders, as well.
            shared = report("default", handler["default"])  # type: ignore[arg-type]
    finally:
        versioned.stop()
        refusing.stop()
    shown = "\\x1b[2J\\x1b]0;owned\\x07"
    assert not any(c in text for c in "\x1b\x07")
    [versioned_line] = [line for line in text.splitlines() if versioned.address in line]
    assert f"1.6.0{shown}" in versioned_line
    [refusing_line] = [line for line in text.splitlines() if refusing.address in line]
    assert f"no{shown}" in refusing_line
    # JSON escapes control characters anyway; its text is the report's, the same as shown.
    [entry] = json.loads(dumped)
    nodes = {node["address"]: node for node in entry["nodes"]}
    assert nodes[versioned.address]["version"] == f"1.6.0{shown}"
    assert nodes[refusing.address]["error"].endswith(f"no{shown}")
    texts = ("address", "hostname", "version", "error")
    assert [{k: n.get(k) for k in texts} for n in entry["nodes"]] == [
        {k: n.get(k) for k in texts} for n in shared["nodes"]
    ]
    assert all(value.isprintable() for value in strings(shared))


def test_without_a_cache_using_the_backend_it_says_so() -> None:
    _, err = run(default={"BACKEND": "django.core.cache.backends.locmem.LocMemCache"})
    assert "No cache uses" in err


MANAGE_SETTINGS = """
SECRET_KEY = "manage"
INSTALLED_APPS = ["django_elasticache_rs"]
CACHES = {"default": {"BACKEND": THE_BACKEND, "LOCATION": THE_LOCATION, "OPTIONS": THE_OPTIONS}}
"""


def manage(tmp_path: Any, location: Any, options: dict[str, Any], *args: str) -> Any:
    """``python -m django elasticache ARGS`` in a fresh interpreter (as an operator's health
    check runs it), on a project whose one cache is ours."""
    settings = (
        MANAGE_SETTINGS.replace("THE_BACKEND", repr(BACKEND))
        .replace("THE_LOCATION", repr(location))
        .replace("THE_OPTIONS", repr(options))
    )
    (tmp_path / "manage_settings.py").write_text(settings)
    return subprocess.run(
        [sys.executable, "-m", "django", "elasticache", *args, "--settings=manage_settings"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )


def test_the_exit_status_is_a_health_check(cluster: LocalCluster, tmp_path: Any) -> None:
    endpoint = cluster.configuration_endpoint
    # Every node up: 0.
    healthy = manage(tmp_path, endpoint, {})
    assert healthy.returncode == 0, healthy.stderr
    # A node down: 2, the report still printed, and (with ignore_exc) no failure log lines
    # for the command's own probes.
    killed = cluster.addresses[0]
    cluster.kill_node(killed)
    for options in ({}, {"ignore_exc": True}):
        down = manage(tmp_path, endpoint, options)
        assert down.returncode == 2, down.stderr
        assert f"1 node down: default {killed}" in down.stderr
        [line] = [line for line in down.stdout.splitlines() if killed in line]
        assert " down " in line
        assert "cache failure" not in down.stderr
    # No membership: 3.
    cluster.stop_endpoint()
    fresh = manage(tmp_path, endpoint, {"timeout": 0.5})
    assert fresh.returncode == 3, fresh.stderr
    assert "no membership: default" in fresh.stderr
    # An unknown alias: 1, one line.
    unknown = manage(tmp_path, endpoint, {}, "nope")
    assert unknown.returncode == 1
    assert (
        unknown.stderr.strip() == "CommandError: No cache 'nope' in CACHES (those that do: default)"
    )


def test_this_processes_gutter_and_replays_are_shown() -> None:
    with LocalNode() as healthy, LocalNode() as lost:
        caches = {
            "default": {
                "BACKEND": BACKEND,
                "LOCATION": [healthy.address, lost.address],
                "OPTIONS": {"timeout": 0.3, "retry_attempts": 1, "ignore_exc": True},
            }
        }
        with override_settings(CACHES=caches):
            from django.core.cache import caches as handler

            cache = handler["default"]
            keys = [f"k{i}" for i in range(20)]
            lost.stop()
            for key in keys:  # the first meets the lost node; the others its gutter
                cache.get(key)
                cache.delete(key)
            # A node is down: the report, then exit status 2.
            [report] = json.loads(run("--json", status=2, **caches)[0])
            text, _ = run(status=2, **caches)
    events = report["cluster_events"]
    assert events["gutter_reads"] > 0 and events["gutter_writes"] > 0, events
    assert events["invalidations_waiting"] > 0, "the lost node's deletes wait for its return"
    [line] = [line for line in text.splitlines() if "this process:" in line]
    assert f"gutter {events['gutter_reads']:,} reads" in line
