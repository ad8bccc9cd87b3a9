"""gunicorn's gevent worker (issue 13): a Django site (``tests/support/gevent_site``) whose cache
spans a healthy node and a frozen one (SIGSTOP), served by one ``gunicorn -k gevent`` worker.
Requests reading the frozen node wait for their timeout; meanwhile every request reading the
healthy node must be served. Each healthy response says how many frozen reads were in flight in
the worker when it was made: the assertion is on that, not on how long anything took."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from tests.support.placement import keys_on
from tests.support.processes import freeze

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY_PREFIX = "gunicorn"
# The frozen reads' deadline: the healthy requests are served within a small part of it.
TIMEOUT = 5
FROZEN_REQUESTS = 3
HEALTHY_CLIENTS = 8
REQUESTS_PER_CLIENT = 10
# Bounds on waiting for a condition, so that a failure fails rather than hangs.
BOUND = 30.0


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[LocalNode, LocalNode]]:
    with LocalNode() as healthy, LocalNode() as frozen:
        yield healthy, frozen


def site_config(healthy: LocalNode, frozen: LocalNode) -> dict[str, Any]:
    """What the site reads from ``GEVENT_SITE``; the healthy node's values are stored here."""
    cache = ElastiCache(
        [healthy.address, frozen.address],
        {"KEY_PREFIX": KEY_PREFIX, "OPTIONS": {"discovery": "off"}},
    )
    values = {key: f"value-of-{key}" for key in keys_on(cache, healthy.address, 5, "healthy")}
    cache.set_many(values)
    return {
        "healthy": healthy.address,
        "frozen": frozen.address,
        "key_prefix": KEY_PREFIX,
        "timeout": TIMEOUT,
        "healthy_values": values,
        "frozen_key": keys_on(cache, frozen.address, 1, "frozen")[0],
        "reads_per_request": 4,
    }


def request(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=BOUND)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else {"body": body}
    finally:
        connection.close()


def in_thread(results: list[Any], port: int, path: str, times: int = 1) -> threading.Thread:
    def client() -> None:
        for _ in range(times):
            try:
                results.append(request(port, path))
            except Exception as error:  # reported by the test
                results.append((0, {"error": repr(error)}))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    return thread


def wait_for(condition: Any, what: str, bound: float) -> None:
    """Polls ``condition()`` until it holds; fails once ``bound`` seconds have passed."""
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.02)


@pytest.fixture
def gunicorn(nodes: tuple[LocalNode, LocalNode]) -> Iterator[int]:
    """One gevent worker serving the site on a free port; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.support.gevent_site.settings",
        "GEVENT_SITE": json.dumps(site_config(*nodes)),
    }
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--worker-class",
                "gevent",
                "--workers",
                "1",
                "--worker-connections",
                "100",
                "--bind",
                f"fd://{listener.fileno()}",
                "--chdir",
                str(REPO_ROOT),
                "--no-control-socket",  # at a fixed path otherwise
                "--graceful-timeout",
                "2",
                "tests.support.gevent_site.wsgi:application",
            ],
            env=env,
            pass_fds=[listener.fileno()],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        listener.close()  # gunicorn has its own copy
        try:
            yield port
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.seek(0)
            output = log.read().decode(errors="replace")
            # Shown with the test's own failure.
            print(f"gunicorn's output:\n{output}")


def test_healthy_requests_are_served_while_frozen_reads_wait(
    gunicorn: int, nodes: tuple[LocalNode, LocalNode]
) -> None:
    port = gunicorn
    # The worker is up and the site works before the node is stopped.
    assert request(port, "/status") == (200, {"frozen_in_flight": 0})
    status, served = request(port, "/healthy")
    assert status == 200 and served["reads"] == 20, served
    frozen = nodes[1]
    assert frozen.pid is not None
    freeze(frozen.pid)
    try:
        frozen_results: list[Any] = []
        frozen_clients = [
            in_thread(frozen_results, port, "/frozen") for _ in range(FROZEN_REQUESTS)
        ]
        wait_for(
            lambda: request(port, "/status")[1].get("frozen_in_flight") == FROZEN_REQUESTS,
            f"all {FROZEN_REQUESTS} frozen reads in flight at once (the worker must not block "
            "on one of them)",
            # Past the frozen reads' own deadline they can no longer all be in flight.
            bound=TIMEOUT,
        )
        healthy_results: list[Any] = []
        healthy_clients = [
            in_thread(healthy_results, port, "/healthy", REQUESTS_PER_CLIENT)
            for _ in range(HEALTHY_CLIENTS)
        ]
        for thread in healthy_clients + frozen_clients:
            thread.join(timeout=BOUND)
            assert not thread.is_alive(), "a request never finished"
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    assert len(healthy_results) == HEALTHY_CLIENTS * REQUESTS_PER_CLIENT
    assert all(status == 200 for status, _ in healthy_results), healthy_results
    assert all(body["reads"] == 20 for _, body in healthy_results)
    in_flight = [body["frozen_in_flight"] for _, body in healthy_results]
    assert in_flight == [FROZEN_REQUESTS] * len(healthy_results), (
        "every healthy request was served while all the frozen reads were still waiting"
    )
    assert frozen_results == [(200, {"outcome": "CacheTimeoutError"})] * FROZEN_REQUESTS
