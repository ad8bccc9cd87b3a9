"""Settings are validated once, when Django builds the cache: every option with a wrong type or
a value out of range raises ``ImproperlyConfigured`` naming the option, and nothing invalid
survives to fail at the first request. The native constructor keeps its own checks
(``TypeError``/``ValueError`` naming the argument, never ``OverflowError``)."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs import Client
from django_elasticache_rs.backend import ElastiCache
from django_elasticache_rs.local import LocalNode
from django_elasticache_rs.options import DEFAULTS, MAX_VALUE_LENGTH_LIMIT, parse_options

NAN = float("nan")
INF = float("inf")
MISSING_FILE = "/nonexistent/django-elasticache-rs/ca.pem"

#: Per option: values of the wrong type, then values out of range (each must be refused).
BAD: dict[str, list[Any]] = {
    "discovery": [1, None, True, "sometimes", "AUTO"],
    "discovery_interval": ["60", True, [60], -1, NAN, INF, -INF, 1e300, 86_401, 2**70],
    "discovery_retry_delay": ["1", None, False, -0.5, NAN, INF, 86_401, 2**64],
    "use_vpc_ip_address": [1, 0, "yes", None],
    "connect_timeout": ["1", True, {}, 0, 0.0, -1, NAN, INF, 1e300, 2**63, 10**400],
    "timeout": ["1", True, b"1", 0, 0.0, -0.1, NAN, INF, -INF, 1e300, 2**63, 10**400],
    "use_pooling": [1, "no", None],
    "max_pool_size": ["4", 4.0, True, 0, -1, 65_536, 2**64, 2**70],
    "pool_idle_timeout": ["1", None, True, -1, NAN, INF, 86_401],
    "no_delay": [0, 1, "true", None],
    "socket_keepalive": [
        "yes",
        [60],
        SimpleNamespace(idle="60"),
        SimpleNamespace(idle=0),
        0,
        0.5,
        -1,
        32_768,
        NAN,
        INF,
        2**70,
    ],
    "ignore_exc": [1, "True", None],
    "retry_attempts": ["2", 2.0, True, None, 0, -1, 1_001, 2**32, 2**64],
    "retry_timeout": ["1", None, True, -1, NAN, INF, 86_401],
    "dead_timeout": ["60", None, True, -1, NAN, INF, 86_401, 2**63],
    "warmup_window": ["60", None, True, -1, NAN, INF, 86_401],
    "migrate_from": [
        1,
        b"host:11211",
        "",
        " ; ",
        [],
        [1],
        {},
        {"LOCATION": ""},
        {"LOCATION": "a:1", "hashing": "md5"},
        {"LOCATION": "a:1", "discovery": "maybe"},
        {"LOCATION": "a:1", "TIMEOUT": 1},
        {"hashing": "ketama"},
    ],
    "logger": [None, "", 1, b"name"],
    "failure_log_level": ["LOUD", "", 7, True, 2.5],
    "gevent": ["on", "", "AUTO", 1, 0, None],
    "counters": ["yes", 1, 0, None],
    "coalesce_reads": ["yes", 1, 0, None],
    "hot_keys_sample": [-1, 1_000_001, 1.5, "100", None],
    "hot_keys_report": [0, -1, "60", True, NAN, INF, 86_401],
    "local_cache": [
        True,
        1,
        "ttl=1",
        [("ttl", 1)],
        {"ttl": 0},
        {"ttl": -1},
        {"ttl": "1"},
        {"ttl": True},
        {"ttl": NAN},
        {"ttl": 86_401},
        {"max_keys": 0},
        {"max_keys": 1.5},
        {"max_keys": 10_000_001},
        {"max_bytes": 1023},
        {"max_bytes": 2**70},
        {"min_reads_per_second": -1},
        {"min_reads_per_second": 1_000_001},
        {"min_reads_per_second": None},
        {"TTL": 1},
        {"max_size": 100},
    ],
    "stampede_protection": [1, "yes", None],
    "stampede_lease": ["10", 10.0, True, None, 0, -1, 2_592_001, 2**64],
    "stampede_wait": ["15", None, True, 0, -1, NAN, INF, 86_401],
    "early_recompute": ["5", 5.5, True, 0, -1, 2_592_001],
    "metrics": ["Prometheus", "statsd", 1, True],
    "tracing": ["OpenTelemetry", "jaeger", 1, True],
    "serde": [
        "pickle",
        object(),
        SimpleNamespace(serialize=lambda key, value: (value, 0)),
        SimpleNamespace(serialize=1, deserialize=2),
    ],
    "allow_unicode_keys": [1, "yes"],
    "default_noreply": [0, "no"],
    "key_prefix": [1, None, "wire-prefix"],
    "encoding": [8, None, "latin-1"],
    "max_value_length": ["1", 1.5, True, 0, -1, 1_023, MAX_VALUE_LENGTH_LIMIT + 1, 2**70],
    "tls_context": ["ctx", object(), True],
    "tls": [1, "yes", None],
    "tls_ca_file": [123, b"/etc/ssl", MISSING_FILE, "/"],
    "tls_cert_file": [123, MISSING_FILE, "/"],
    "tls_key_file": [123, MISSING_FILE, "/"],
    "tls_server_name": [123, b"name", "", "has space", "\ud800", "bad..name"],
    "hashing": [None, 1, "PYLIBMC", "md5", "consistent", "rendezvous"],
    "min_compress_len": ["400", 400.0, True, None, -1, MAX_VALUE_LENGTH_LIMIT + 1, 2**70],
    "compress_level": ["6", 6.0, True, None, -1, 0, 10, 2**70],
    "gutter": [1, 0, "yes", None, ["127.0.0.1:11211"]],
    "gutter_ttl": [0, -1, 10.5, "10", True, None, 2_592_001],
    "max_invalidations": [-5, 1.5, "100", True, None, 1_000_001],
    "invalidation_overflow": ["FLUSH", "drop", None, True, 1],
    "compressor": [None, 1, "ZSTD", "lzma", "gzip"],
    "zstd_dictionary": [123, MISSING_FILE, "/", __file__],
    "serializer": [
        None,
        1,
        "",
        "yaml",
        "no_such_module.Serializer",
        "os.path",
        "tests.support.serializers.NoLoads",
    ],
    "sign_values": [1, "yes", None],
    "signing_key": [1, "", b"", ["key"]],
    "signing_key_fallbacks": ["old", b"old", [1], [""], 5],
    "large_values": [1, "yes", None],
    "max_large_value_length": ["64", 64.0, True, None, 1_023, 2**40 + 1, 2**70],
}

#: Per option: values at the edges of what it accepts (each must be taken).
GOOD: dict[str, list[Any]] = {
    "discovery": ["auto", "on", "off"],
    "discovery_interval": [None, 0, 0.5, 86_400],
    "discovery_retry_delay": [0, 1.5, 86_400],
    "use_vpc_ip_address": [True, False],
    "connect_timeout": [None, 0.001, 86_400],
    "timeout": [None, 0.001, 1, 86_400.0],
    "use_pooling": [True, False],
    "max_pool_size": [None, 1, 65_535],
    "pool_idle_timeout": [0, 0.5, 86_400],
    "no_delay": [True, False],
    "socket_keepalive": [None, False, True, 1, 32_767, SimpleNamespace(idle=30)],
    "ignore_exc": [True, False],
    "retry_attempts": [1, 1_000],
    "retry_timeout": [0, 86_400],
    "dead_timeout": [0, 0.5, 86_400],
    "warmup_window": [0, 0.5, 60, 86_400],
    "migrate_from": [
        None,
        "old.example.com:11211",
        "a:11211;b:11211",
        ["a:11211", "b:11211"],
        ("a:11211",),
        {"LOCATION": "old-cluster.cfg.use1.cache.amazonaws.com:11211"},
        {"LOCATION": ["a:11211", "b:11211"], "hashing": "ketama", "discovery": "off"},
    ],
    "logger": ["myproject.cache", "elasticache_client.failures"],
    "failure_log_level": ["WARNING", "info", "Error", logging.ERROR, None],
    "gevent": ["auto", True, False],
    "counters": [True, False],
    "coalesce_reads": [True, False],
    "hot_keys_sample": [0, 1, 100, 1_000_000],
    "hot_keys_report": [None, 0.5, 60, 86_400],
    "local_cache": [
        None,
        {},
        {"ttl": 1},
        {"ttl": 0.25, "max_keys": 100, "max_bytes": 1 << 20, "min_reads_per_second": 0},
        {"ttl": 86_400, "max_keys": 10_000_000, "max_bytes": 64 << 30},
        {"min_reads_per_second": 1_000_000},
    ],
    "stampede_protection": [True, False],
    "stampede_lease": [1, 2_592_000],
    "stampede_wait": [0.001, 15, 86_400],
    "early_recompute": [None, 1, 2_592_000],
    "metrics": [None, "prometheus", "opentelemetry"],
    "tracing": [None, "opentelemetry"],
    "serde": [None, SimpleNamespace(serialize=lambda k, v: (v, 0), deserialize=lambda k, v, f: v)],
    "allow_unicode_keys": [True, False],
    "default_noreply": [True, False],
    "key_prefix": ["", b""],
    "encoding": ["utf-8", "UTF_8", "utf8", "ascii"],
    "max_value_length": [None, 1_024, MAX_VALUE_LENGTH_LIMIT],
    "tls_context": [None],
    "tls": [False],
    "tls_ca_file": [None],
    "tls_cert_file": [None],
    "tls_key_file": [None],
    "tls_server_name": [None, "cache.example.com", "10.0.0.5"],
    "hashing": ["pymemcache", "pylibmc", "ketama"],
    "min_compress_len": [0, 1, 400, MAX_VALUE_LENGTH_LIMIT],
    "compress_level": [1, 6, 9],
    "gutter": [True, False],
    "gutter_ttl": [1, 10, 2_592_000],
    "max_invalidations": [0, 1, 10_000, 1_000_000],
    "invalidation_overflow": ["flush", "ignore"],
    "compressor": ["zlib", "zstd", "lz4"],
    "zstd_dictionary": [None],
    "serializer": ["pickle", "json", "msgpack", "tests.support.serializers.Tagged"],
    "sign_values": [True, False],
    "signing_key": [None, "key", b"\x00key"],
    "signing_key_fallbacks": [None, [], ["old", b"older"], ("old",)],
    "large_values": [True, False],
    "max_large_value_length": [1_024, 64 * 1024 * 1024, 2**40],
}


def test_the_tables_cover_every_option() -> None:
    assert set(BAD) == set(DEFAULTS)
    assert set(GOOD) == set(DEFAULTS)


def _cases(table: dict[str, list[Any]]) -> list[Any]:
    return [
        pytest.param(name, value, id=f"{name}={value!r}"[:60])
        for name, values in table.items()
        for value in values
    ]


@pytest.mark.parametrize(("name", "value"), _cases(BAD))
def test_a_bad_option_is_refused_when_the_cache_is_built(name: str, value: Any) -> None:
    # The address is never contacted: what is refused is refused before any request.
    with pytest.raises(ImproperlyConfigured, match=rf"OPTIONS\[{name!r}\]") as raised:
        ElastiCache("127.0.0.1:1", {"OPTIONS": {name: value}})
    # It says what it accepts, or why the value cannot be used.
    assert any(words in str(raised.value) for words in ("must be", "not supported", "cannot"))


@pytest.mark.parametrize(("name", "value"), _cases(GOOD))
def test_a_good_option_is_taken(name: str, value: Any) -> None:
    cache = ElastiCache("127.0.0.1:1", {"OPTIONS": {name: value}})
    assert cache.client is not None


@pytest.mark.parametrize(
    "location",
    [
        "127.0.0.1:99999",
        "127.0.0.1:0",
        "127.0.0.1:abc",
        "127.0.0.1:",
        "[::1:11211",
        "[::1]x",
        ":11211",
        "bad host:11211",
        "127.0.0.1:11211;127.0.0.1:99999",
        ["127.0.0.1:11211", 11211],
        "\ud800:11211",
        11211,
        " ; ",
    ],
)
def test_a_bad_location_is_refused_when_the_cache_is_built(location: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="LOCATION"):
        ElastiCache(location, {})


@pytest.mark.parametrize("prefix", ["has space", "tab\t", "\ud800", "p" * 247, "\x7f"], ids=repr)
def test_a_key_prefix_no_key_could_carry_is_refused(prefix: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="KEY_PREFIX"):
        ElastiCache("127.0.0.1:1", {"KEY_PREFIX": prefix})


@pytest.mark.parametrize("timeout", [INF, -INF], ids=repr)
def test_an_infinite_default_timeout_is_refused(timeout: float) -> None:
    with pytest.raises(ImproperlyConfigured, match="TIMEOUT"):
        ElastiCache("127.0.0.1:1", {"TIMEOUT": timeout})


def test_a_huge_default_timeout_never_expires(memcached: LocalNode) -> None:
    cache = ElastiCache(memcached.address, {"TIMEOUT": 1e300})
    assert cache.get_backend_timeout() == 0


def test_options_must_be_a_mapping() -> None:
    # (Django's BaseCache itself fails on OPTIONS without .get(); a tuple of pairs reaches us.)
    with pytest.raises(ImproperlyConfigured, match="OPTIONS must be a dict"):
        parse_options((("timeout", 1),), ["127.0.0.1:1"])


def test_zero_timeout_is_refused_saying_none_means_no_deadline() -> None:
    for name in ("timeout", "connect_timeout"):
        with pytest.raises(ImproperlyConfigured, match="None for no deadline"):
            ElastiCache("127.0.0.1:1", {"OPTIONS": {name: 0}})


def test_max_value_length_is_bounded_by_the_protocol_limit() -> None:
    with pytest.raises(ImproperlyConfigured, match="1073741824"):
        ElastiCache("127.0.0.1:1", {"OPTIONS": {"max_value_length": 2 * 1024**3}})


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_an_unreadable_tls_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("secret")
    path.chmod(0)
    with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['tls_ca_file'\]"):
        ElastiCache("127.0.0.1:1", {"OPTIONS": {"tls_ca_file": str(path)}})


def test_tls_files_the_native_client_cannot_load_are_refused_when_the_cache_is_built(
    tmp_path: Path,
) -> None:
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("this is no certificate\n")
    for option in ("tls_ca_file", "tls_cert_file"):
        options = {option: str(not_pem)}
        if option == "tls_cert_file":
            options["tls_key_file"] = str(not_pem)
        with pytest.raises(ImproperlyConfigured, match=rf"OPTIONS\[{option!r}\]"):
            ElastiCache("127.0.0.1:1", {"OPTIONS": options})


def test_a_client_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ImproperlyConfigured, match="both tls_cert_file and tls_key_file"):
        ElastiCache("127.0.0.1:1", {"OPTIONS": {"tls_cert_file": str(cert)}})


def test_a_tls_context_is_taken() -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    cache = ElastiCache("127.0.0.1:1", {"OPTIONS": {"tls_context": context}})
    assert cache.client is not None


def test_a_serde_that_cannot_be_hashed_is_taken(memcached: LocalNode) -> None:
    class Upper:
        __hash__ = None  # type: ignore[assignment]

        def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
            return str(value).upper().encode(), 0

        def deserialize(self, key: str, value: bytes, flags: int) -> Any:
            return value.decode()

    cache = ElastiCache(memcached.address, {"OPTIONS": {"serde": Upper()}})
    cache.set("serde-key", "quiet")
    assert cache.get("serde-key") == "QUIET"


def test_a_valid_configuration_still_works(memcached: LocalNode) -> None:
    cache = ElastiCache(
        memcached.address,
        {
            "KEY_PREFIX": 7,  # Django formats any KEY_PREFIX with %s
            "OPTIONS": {
                "timeout": 0.5,
                "connect_timeout": None,
                "socket_keepalive": 30,
                "max_value_length": 2 * 1024 * 1024,
                "discovery_interval": 0,
            },
        },
    )
    cache.set("options-key", "v")
    assert cache.get("options-key") == "v"
    assert cache.client.get("7:1:options-key") == "v"


# The native constructor is a public API too: it names the argument and never overflows.

NATIVE_BAD: list[tuple[str, Any, type[Exception]]] = [
    ("timeout", 0, ValueError),
    ("timeout", NAN, ValueError),
    ("timeout", INF, ValueError),
    ("timeout", 1e300, ValueError),
    ("timeout", 2**2000, ValueError),
    ("timeout", True, TypeError),
    ("timeout", "1", TypeError),
    ("connect_timeout", 0.0, ValueError),
    ("connect_timeout", -1, ValueError),
    ("pool_idle_timeout", -1, ValueError),
    ("retry_timeout", 86_401, ValueError),
    ("dead_timeout", NAN, ValueError),
    ("discovery_interval", -1, ValueError),
    ("discovery_retry_delay", INF, ValueError),
    ("socket_keepalive", 32_768, ValueError),
    ("max_pool_size", 2**70, ValueError),
    ("max_pool_size", -1, ValueError),
    ("max_pool_size", 0, ValueError),
    ("max_pool_size", 4.0, TypeError),
    ("retry_attempts", -1, ValueError),
    ("retry_attempts", 2**200, ValueError),
    ("max_value_length", -1, ValueError),
    ("max_value_length", MAX_VALUE_LENGTH_LIMIT + 1, ValueError),
    ("no_delay", 1, TypeError),
    ("serde", object(), TypeError),
    ("discovery", "sometimes", ValueError),
    ("tls_server_name", 123, TypeError),
    ("tls_server_name", "bad..name", ValueError),
    ("tls_ca_file", MISSING_FILE, ValueError),
    ("hashing", "md5", ValueError),
    ("hashing", None, TypeError),
    ("min_compress_len", -1, ValueError),
    ("min_compress_len", 2**70, ValueError),
    ("min_compress_len", 1.5, TypeError),
    ("compress_level", 0, ValueError),
    ("compress_level", 10, ValueError),
    ("compress_level", True, TypeError),
]


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [pytest.param(*case, id=f"{case[0]}={case[1]!r}"[:60]) for case in NATIVE_BAD],
)
def test_the_native_constructor_names_the_bad_argument(
    name: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        Client(["127.0.0.1:1"], **{name: value})
    assert type(raised.value) is error  # not OverflowError, not a panic
    shown = " ".join([str(raised.value), *getattr(raised.value, "__notes__", ())])
    assert name in shown


@pytest.mark.parametrize("server", ["127.0.0.1:99999", "[::1", "", "h:x"])
def test_the_native_constructor_refuses_bad_addresses(server: str) -> None:
    with pytest.raises(ValueError, match="servers"):
        Client([server])


def test_options_are_parsed_once_per_dict_and_again_when_it_changes() -> None:
    """Django builds a backend object per thread (per request under gevent): the same
    ``OPTIONS`` dict is validated once, and again once it is changed in place."""
    options: dict[str, Any] = {"timeout": 0.5}
    params = {"OPTIONS": options}
    first = ElastiCache("127.0.0.1:11211", params)
    second = ElastiCache("127.0.0.1:11211", params)
    assert second._settings is first._settings
    # The same dict for other servers is parsed for them.
    assert ElastiCache("127.0.0.1:11212", params)._settings is not first._settings
    options["timeout"] = "soon"
    with pytest.raises(ImproperlyConfigured, match="timeout"):
        ElastiCache("127.0.0.1:11211", params)
    options["timeout"] = 0.25
    changed = ElastiCache("127.0.0.1:11211", params)
    assert changed._settings is not first._settings
    assert dict(changed._settings.native)["timeout"] == 0.25
