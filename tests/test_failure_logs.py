"""The failure-logging policy: many failures in a row give a few records, not one per call, on the
logger and at the level the options name; a node answering again is logged once at INFO."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalCluster
from tests.support.faults import faulty_server

DEFAULT_LOGGER = "elasticache_client.failures"
CALLS = 500


def backend_for(address: str, **options: Any) -> ElastiCache:
    """A backend for one node (no discovery) that turns failures into misses."""
    options = {
        "timeout": 0.1,
        "connect_timeout": 0.5,
        "discovery": "off",
        "ignore_exc": True,
        **options,
    }
    return ElastiCache(address, {"OPTIONS": options})


def dead_address() -> str:
    """A loopback address with nothing listening: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"127.0.0.1:{port}"


def records_of(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == logger]


def wait_until(what: str, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)  # polling interval, not synchronisation


def test_a_dead_node_gives_a_warning_and_a_marking_not_one_record_per_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    address = dead_address()
    cache = backend_for(address, retry_attempts=1, dead_timeout=60)
    for n in range(CALLS):
        assert cache.get(f"k{n}") is None
    records = records_of(caplog, DEFAULT_LOGGER)
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING], records
    first, marking = (r.getMessage() for r in records)
    assert first.startswith(f"cache failure ignored (ignore_exc): cannot connect to {address}: ")
    assert first.endswith(f"; further failures of {address} are summarised at most once a minute")
    assert marking == f"{address} is marked down after 1 failure; next try in 60.0 s"


def test_a_dead_node_with_default_retries_gives_at_most_three_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    cache = backend_for(dead_address())
    for n in range(CALLS):
        assert cache.get(f"k{n}") is None
        cache.set(f"k{n}", n)
    records = records_of(caplog, DEFAULT_LOGGER)
    assert 1 <= len(records) <= 3, [r.getMessage() for r in records]


def test_a_hanging_node_gives_at_most_three_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    with faulty_server(None) as server:
        cache = backend_for(server.address)
        for n in range(CALLS):
            assert cache.get(f"k{n}") is None
        records = records_of(caplog, DEFAULT_LOGGER)
        messages = [r.getMessage() for r in records]
        assert 1 <= len(records) <= 3, messages
        assert f"{server.address} did not answer within 100 ms" in messages[0]
        assert all(r.levelno == logging.WARNING for r in records)


def test_the_recovery_is_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    with faulty_server(None) as server:
        cache = backend_for(server.address, retry_attempts=1, dead_timeout=0.2)
        for n in range(20):
            assert cache.get(f"k{n}") is None
        assert records_of(caplog, DEFAULT_LOGGER), "the failures were logged"
        server.reply = b"END\r\n"  # it answers again: every key a miss

        def recovered() -> list[logging.LogRecord]:
            return [
                r
                for r in records_of(caplog, DEFAULT_LOGGER)
                if "is answering again" in r.getMessage()
            ]

        wait_until("the recovery record", lambda: cache.get("probe") is None and bool(recovered()))
        for n in range(CALLS):
            assert cache.get(f"k{n}") is None
        (record,) = recovered()
        assert record.levelno == logging.INFO
        assert record.getMessage().startswith(f"{server.address} is answering again after ")
        assert " failures over " in record.getMessage() or " failure over " in record.getMessage()


def test_no_membership_is_logged_by_endpoint_without_a_record_per_call(
    elasticache_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    endpoint = elasticache_cluster.configuration_endpoint
    elasticache_cluster.set_fault("garbage")
    cache = ElastiCache(
        endpoint,
        {"OPTIONS": {"timeout": 0.3, "ignore_exc": True, "discovery_interval": 0}},
    )
    for n in range(CALLS):
        assert cache.get(f"k{n}") is None
    assert cache.servers == []
    records = records_of(caplog, DEFAULT_LOGGER)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert message.startswith("cache failure ignored (ignore_exc): no cluster membership from ")
    assert message.endswith(f"further failures of {endpoint} are summarised at most once a minute")

    # The endpoint answers again: the discovery a call runs (there is no refresher here) logs
    # the recovery, once.
    elasticache_cluster.set_fault(None)

    def works() -> bool:
        cache.set("back", "yes")
        return cache.get("back") == "yes"

    wait_until("the cache to work again", works)
    recovered = [
        r.getMessage() for r in records_of(caplog, DEFAULT_LOGGER) if r.levelno == logging.INFO
    ]
    assert len(recovered) == 1, recovered
    assert recovered[0].startswith(f"{endpoint} is answering again after ")


def test_a_failing_endpoint_is_logged_once_and_its_recovery_at_info(
    elasticache_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="elasticache_client")
    endpoint = elasticache_cluster.configuration_endpoint
    cache = ElastiCache(endpoint, {"OPTIONS": {"timeout": 0.3, "discovery_interval": 0.1}})
    cache.set("k", "v")
    elasticache_cluster.set_fault("garbage")
    requests = elasticache_cluster.discovery_requests

    def messages() -> list[str]:
        return [r.getMessage() for r in records_of(caplog, DEFAULT_LOGGER)]

    # The refresher retries at least a second apart after a failure: three failed attempts.
    wait_until(
        "three failed refreshes",
        lambda: elasticache_cluster.discovery_requests >= requests + 3,
        timeout=30,
    )
    (failed,) = messages()
    assert failed.startswith("discovery failed, keeping the last good membership: ")
    elasticache_cluster.set_fault(None)
    wait_until("the endpoint's recovery", lambda: len(messages()) == 2, timeout=30)
    recovered = messages()[1]
    assert recovered.startswith(f"{endpoint} is answering again after ")
    assert [r.levelno for r in records_of(caplog, DEFAULT_LOGGER)] == [
        logging.WARNING,
        logging.INFO,
    ]
    assert cache.get("k") == "v"


@pytest.mark.parametrize(
    ("level", "levelno"),
    [("ERROR", logging.ERROR), ("info", logging.INFO), (logging.ERROR, logging.ERROR)],
)
def test_records_go_to_the_configured_logger_at_the_configured_level(
    caplog: pytest.LogCaptureFixture, level: str | int, levelno: int
) -> None:
    caplog.set_level(logging.INFO)
    cache = backend_for(dead_address(), logger="myproject.cache.failures", failure_log_level=level)
    for n in range(CALLS):
        assert cache.get(f"k{n}") is None
    records = records_of(caplog, "myproject.cache.failures")
    assert 1 <= len(records) <= 3, [r.getMessage() for r in records]
    assert {r.levelno for r in records} == {levelno}
    assert not records_of(caplog, DEFAULT_LOGGER)


def test_a_level_of_none_silences_failures(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with faulty_server(None) as server:
        cache = backend_for(server.address, failure_log_level=None, retry_attempts=1)
        for n in range(50):
            assert cache.get(f"k{n}") is None
    assert server.connections >= 1, "the node was tried"
    assert not [r for r in caplog.records if r.name.startswith("elasticache_client")]


def test_the_python_logger_level_filters_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger=DEFAULT_LOGGER)
    cache = backend_for(dead_address())
    for n in range(50):
        assert cache.get(f"k{n}") is None
    assert not records_of(caplog, DEFAULT_LOGGER)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"logger": ""}, r"OPTIONS\['logger'\] must be a logger name"),
        ({"logger": 42}, r"OPTIONS\['logger'\] must be a logger name"),
        ({"failure_log_level": "DEBUG"}, r"OPTIONS\['failure_log_level'\] must be"),
        ({"failure_log_level": logging.DEBUG}, r"OPTIONS\['failure_log_level'\] must be"),
        ({"failure_log_level": True}, r"OPTIONS\['failure_log_level'\] must be"),
        ({"failure_log_level": ["WARNING"]}, r"OPTIONS\['failure_log_level'\] must be"),
    ],
)
def test_bad_logging_options_are_refused_when_the_cache_is_built(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        ElastiCache("127.0.0.1:11211", {"OPTIONS": {"discovery": "off", **options}})
