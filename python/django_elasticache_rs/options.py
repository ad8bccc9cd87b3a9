"""``LOCATION`` and ``OPTIONS`` of the Django backend: parsing, validation, defaults.

The option names are django-elastipymemcache's (which are pymemcache's ``HashClient``
arguments plus its discovery settings), so that moving to this backend changes ``BACKEND`` only.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs._native import MAX_KEEPALIVE_SECONDS as _MAX_KEEPALIVE_SECONDS
from django_elasticache_rs._native import (
    MAX_LEASE_SECONDS,
    MAX_POOL_SIZE,
    MAX_RETRY_ATTEMPTS,
    MAX_SECONDS,
    MAX_VALUE_LENGTH,
    MIN_VALUE_LENGTH,
)

logger = logging.getLogger("django_elasticache_rs")

#: Every accepted option and its default.
DEFAULTS: dict[str, Any] = {
    # Auto Discovery (with a single LOCATION: the configuration endpoint).
    "discovery": "auto",
    "discovery_interval": 60.0,
    "discovery_retry_delay": 0.0,
    "use_vpc_ip_address": True,
    # Connections and pooling.
    "connect_timeout": 1.0,
    "timeout": 1.0,
    "use_pooling": True,
    "max_pool_size": 64,
    "pool_idle_timeout": 0,
    "no_delay": True,
    "socket_keepalive": False,
    # Failures.
    "ignore_exc": False,
    "retry_attempts": 2,
    "retry_timeout": 1.0,
    "dead_timeout": 60.0,
    # Counters behind cache.metrics(): kept unless turned off (to measure what they cost).
    "counters": True,
    # Where the counters are exported: None, "prometheus" or "opentelemetry" (the extras).
    "metrics": None,
    # A CLIENT span per cache call: None, or "opentelemetry" (the `opentelemetry` extra).
    "tracing": None,
    # gevent: "auto" yields to gevent's hub when it has monkey-patched ``socket``; True always
    # (gevent must be installed), False never.
    "gevent": "auto",
    # get_or_set with a callable default (README "Stampede protection"): one caller in the
    # fleet computes a missing value while the others wait for it, at most `stampede_wait`
    # seconds; a lease runs out after `stampede_lease` seconds (a winner that died). With
    # `early_recompute` (seconds), a hit with less left wins one caller an early refresh.
    "stampede_protection": True,
    "stampede_lease": 10,
    "stampede_wait": 15.0,
    "early_recompute": None,
    # Failure logs: the logger name and the level of failure records (None: silent).
    "logger": "elasticache_client.failures",
    "failure_log_level": "WARNING",
    # Values and keys.
    "serde": None,
    "allow_unicode_keys": True,
    "default_noreply": False,
    "key_prefix": "",
    "encoding": "utf-8",
    "max_value_length": None,
    # Compression of writes (zlib, flag 8): values of at least min_compress_len bytes (0: off,
    # so that pymemcache workers without CompressedSerde still read what is written), at
    # compress_level 1-9. Compressed reads are always understood.
    "min_compress_len": 0,
    "compress_level": 6,
    # Key placement: "pymemcache" (PyMemcacheCache's), "pylibmc" or "ketama" (PyLibMCCache's,
    # default or with behaviors={"ketama": True}).
    "hashing": "pymemcache",
    # TLS.
    "tls_context": None,
    "tls": False,
    "tls_ca_file": None,
    "tls_cert_file": None,
    "tls_key_file": None,
    "tls_server_name": None,
}

#: Options pymemcache accepts that only make sense for its Python internals.
_IGNORED = {"socket_module", "lock_generator", "hasher"}


# The bounds of the options are the native client's (``crates/python/src/args.rs``, which says
# why each is what it is): checked here first only to name the option in Django's terms.
MAX_KEEPALIVE_SECONDS = int(_MAX_KEEPALIVE_SECONDS)
MAX_VALUE_LENGTH_LIMIT = MAX_VALUE_LENGTH


def parse_location(location: Any) -> list[str]:
    """The server list of ``LOCATION``: a list, or a string separated by ``;`` or ``,``.

    Each entry's form (``host:port``, ``[v6]:port``) is checked by the native client when the
    backend is built (see ``ElastiCache.__init__``): one parser for addresses.
    """
    if isinstance(location, str):
        entries: list[Any] = location.replace(",", ";").split(";")
    elif isinstance(location, list | tuple):
        entries = list(location)
    else:
        raise ImproperlyConfigured(
            "CACHES LOCATION must be a 'host:port' string or a list of them, "
            f"not {type(location).__name__}"
        )
    for entry in entries:
        if not isinstance(entry, str) or not _encodable(entry):
            raise ImproperlyConfigured(
                f"CACHES LOCATION entries must be 'host:port' strings, not {entry!r}"
            )
    servers = [entry.strip() for entry in entries if entry.strip()]
    if not servers:
        raise ImproperlyConfigured("CACHES LOCATION names no server")
    return servers


def _encodable(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (not if it holds a lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_key_prefix(given: Any) -> str:
    """``KEY_PREFIX`` as the native client takes it: a ``str`` (Django formats any other
    value with ``%s``), checked once here since it is part of every key."""
    prefix = str(given)
    # A longer prefix leaves no room for a key in memcached's 250 bytes (with ":1:" and one
    # character).
    if (
        not _encodable(prefix)
        or len(prefix.encode("utf-8")) > 246
        or any(ord(c) < 33 or ord(c) == 127 for c in prefix)
    ):
        raise ImproperlyConfigured(
            "CACHES KEY_PREFIX must be UTF-8 text of at most 246 bytes with no spaces or "
            f"control characters (it is part of every memcached key), not {prefix!r}"
        )
    return prefix


def _bad(name: str, accepts: str, value: Any) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"OPTIONS[{name!r}] must be {accepts}, not {value!r}")


def _flag(name: str, value: Any) -> bool:
    # A number is not taken for a bool: `"retry_attempts": 0` typed into `ignore_exc` is a slip.
    if not isinstance(value, bool):
        raise _bad(name, "True or False", value)
    return value


def _number(
    name: str, value: Any, accepts: str, low: float, high: float, *, low_open: bool
) -> float:
    """A real number within [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, accepts, value)
    # Compared before converting: an int too large for a float is out of range, not an error.
    if (
        (isinstance(value, float) and math.isnan(value))
        or value > high
        or value < low
        or (low_open and value == low)
    ):
        raise _bad(name, accepts, value)
    return float(value)


def _seconds(
    name: str, value: Any, *, allow_none: bool = False, allow_zero: bool = True
) -> float | None:
    """A duration option: seconds from 0 (or above 0) to a day; ``None`` where allowed."""
    if value is None and allow_none:
        return None
    low = ">= 0" if allow_zero else "> 0"
    none = ", or None for no deadline" if allow_none and not allow_zero else ""
    none = none or (", or None" if allow_none else "")
    accepts = f"a number of seconds {low} and <= {MAX_SECONDS:.0f}{none}"
    return _number(name, value, accepts, 0.0, MAX_SECONDS, low_open=not allow_zero)


def _whole(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(name, f"a whole number from {low} to {high}", value)
    return value


_LOG_LEVELS = {"WARNING": logging.WARNING, "INFO": logging.INFO, "ERROR": logging.ERROR}


def _failure_log(logger_name: Any, level: Any) -> dict[str, Any]:
    """The native client's ``logger`` and ``failure_log_level`` from the options: a logger name,
    and a level name or ``logging`` constant (WARNING, INFO, ERROR) or ``None`` (silent)."""
    if not isinstance(logger_name, str) or not logger_name:
        raise ImproperlyConfigured("OPTIONS['logger'] must be a logger name (a non-empty string)")
    if isinstance(level, str) and level.upper() in _LOG_LEVELS:
        name: str | None = level.upper()
    elif level is None:
        name = None
    else:
        by_number = {number: text for text, number in _LOG_LEVELS.items()}
        if isinstance(level, bool) or not isinstance(level, int) or level not in by_number:
            raise ImproperlyConfigured(
                "OPTIONS['failure_log_level'] must be 'WARNING', 'INFO', 'ERROR' (or the logging "
                "constant), or None"
            )
        name = by_number[level]
    return {"logger": logger_name, "failure_log_level": name}


def _keepalive_idle(value: Any) -> float | None:
    """TCP keepalive idle seconds from pymemcache's forms: False/None (off), True (60 s), a
    number of seconds, or a ``KeepaliveOpts`` (its ``idle``)."""
    accepts = (
        f"False/None (off), True (60 s), seconds from 1 to {MAX_KEEPALIVE_SECONDS}, "
        "or a KeepaliveOpts"
    )
    if value is None or value is False:
        return None
    if value is True:
        return 60.0
    idle = value if isinstance(value, int | float) else getattr(value, "idle", None)
    if isinstance(idle, bool) or not isinstance(idle, int | float):
        raise _bad("socket_keepalive", accepts, value)
    return _number("socket_keepalive", idle, accepts, 1, MAX_KEEPALIVE_SECONDS, low_open=False)


def _file(name: str, value: Any) -> str | None:
    """A path option: ``None`` or the path of a readable file (its content is checked by the
    native client when the backend is built)."""
    if value is None:
        return None
    if not isinstance(value, str | os.PathLike):
        raise _bad(name, "None or the path of a readable file", value)
    path = os.fspath(value)
    if not isinstance(path, str) or not os.path.isfile(path) or not os.access(path, os.R_OK):
        raise _bad(name, "None or the path of a readable file", value)
    return path


def _server_name(value: Any) -> str | None:
    accepts = "None or a DNS name or IP address"
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or not _encodable(value)
        or any(c.isspace() for c in value)
    ):
        raise _bad("tls_server_name", accepts, value)
    return value


def _serde(value: Any) -> Any:
    if value is None:
        return None
    if not all(callable(getattr(value, m, None)) for m in ("serialize", "deserialize")):
        raise _bad("serde", "None or an object with serialize() and deserialize() methods", value)
    return _ByIdentity(value)


class _ByIdentity:
    """An object compared and hashed by identity, so that an unhashable ``serde`` can be part
    of the shared client's key (and two equal serdes still get one client each)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _tls_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """The native client's TLS arguments from ``tls_context`` (an ``ssl.SSLContext``, as
    django-elastipymemcache takes it) and the ``tls_*`` options.

    From the context: its CA certificates (none: the system's trust store), ``verify_mode``
    and ``check_hostname``. A client certificate loaded into a context cannot be read back out
    of it: give ``tls_cert_file`` and ``tls_key_file`` instead.
    """
    context = options["tls_context"]
    files = {
        name: _file(name, options[name])
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")
    }
    server_name = _server_name(options["tls_server_name"])
    tls = _flag("tls", options["tls"])
    if context is None:
        return {"tls": tls, **files, "tls_server_name": server_name}
    if not isinstance(context, ssl.SSLContext):
        raise _bad("tls_context", "None or an ssl.SSLContext", context)
    return {
        "tls": True,
        "tls_ca_certs": tuple(context.get_ca_certs(binary_form=True)),
        **files,
        "tls_server_name": server_name,
        "tls_verify": context.verify_mode != ssl.CERT_NONE,
        "tls_check_hostname": context.check_hostname,
    }


@dataclass(frozen=True)
class Stampede:
    """How ``get_or_set`` with a callable default keeps a miss to one computation."""

    #: Seconds a lease to compute a missing value lasts (whole seconds, as memcached's TTLs).
    lease: int
    #: The longest a caller waits for another's value before computing it itself.
    wait: float
    #: Seconds before expiry when one caller wins an early refresh (None: off).
    early_recompute: int | None


def parse_early_recompute(value: Any, name: str = "OPTIONS['early_recompute']") -> int | None:
    """An early-recompute window: None (off) or whole seconds from 1 to 30 days."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LEASE_SECONDS:
        raise ImproperlyConfigured(
            f"{name} must be None or a whole number of seconds from 1 to {MAX_LEASE_SECONDS}, "
            f"not {value!r}"
        )
    return value


def _stampede(options: Mapping[str, Any]) -> Stampede | None:
    # Every one is checked, on or off: a mistake is heard of before it is turned on.
    stampede = Stampede(
        lease=_whole("stampede_lease", options["stampede_lease"], 1, MAX_LEASE_SECONDS),
        wait=_number(
            "stampede_wait",
            options["stampede_wait"],
            f"a number of seconds > 0 and <= {MAX_SECONDS:.0f}",
            0.0,
            MAX_SECONDS,
            low_open=True,
        ),
        early_recompute=parse_early_recompute(options["early_recompute"]),
    )
    return stampede if _flag("stampede_protection", options["stampede_protection"]) else None


@dataclass(frozen=True)
class Settings:
    """Validated options: the native client's arguments (hashable: they key the shared client)."""

    native: tuple[tuple[str, Any], ...]
    #: Whether blocking calls yield to gevent's hub: "auto", True or False. Not part of the
    #: shared client's key: every way of waiting drives the same client.
    gevent: Literal["auto"] | bool = field(default="auto", compare=False)
    #: Where the counters are exported (None: nowhere but ``cache.metrics()``).
    metrics: Literal["prometheus", "opentelemetry"] | None = None
    #: Whether each call gets an OpenTelemetry span. Not part of the shared client's key: the
    #: spans wrap the backend's methods, not the client.
    tracing: Literal["opentelemetry"] | None = field(default=None, compare=False)
    #: Stampede protection of ``get_or_set`` (None: off). Not part of the shared client's key:
    #: it is the backend's way of calling the client.
    stampede: Stampede | None = field(default=None, compare=False)

    def native_kwargs(self) -> dict[str, Any]:
        return {
            name: value.value if isinstance(value, _ByIdentity) else value
            for name, value in self.native
        }


#: Settings already parsed, by ``OPTIONS`` dict and servers: Django builds a backend object per
#: thread, and under gevent per greenlet (a request), and validating costs ~15 µs, as much as a
#: ``get``. An entry holds its dict and a copy of it, so a dict changed in place (or a new one
#: at a reused id) is parsed anew. Bounded: tests make new ``CACHES`` by the thousand.
_PARSED: dict[tuple[int, tuple[str, ...]], tuple[dict[str, Any], dict[str, Any], Settings]] = {}
_PARSED_MAX = 64


def parse_options(options: Any, servers: Sequence[str]) -> Settings:
    """``OPTIONS`` validated by ``_parse_options``, once per dict and servers (see ``_PARSED``)."""
    if not isinstance(options, dict):
        return _parse_options(options, servers)
    key = (id(options), tuple(servers))
    cached = _PARSED.get(key)
    if cached is not None and cached[0] is options and cached[1] == options:
        return cached[2]
    settings = _parse_options(options, servers)
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()  # atomic, unlike dropping one entry while other threads look
    _PARSED[key] = (options, dict(options), settings)
    return settings


def _parse_options(options: Any, servers: Sequence[str]) -> Settings:
    """Validates ``OPTIONS`` for ``LOCATION``'s ``servers``: an unknown name, a value of the
    wrong type or out of range raises ``ImproperlyConfigured`` naming the option and what it
    accepts (an unknown name, with a suggestion).

    One server is a configuration endpoint (discovery "auto" unless set); several are a
    static cluster, where discovery "on" is a contradiction.
    """
    if options is not None and not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"CACHES OPTIONS must be a dict, not {options!r}")
    given = dict(options or {})
    for name in given:
        if name in DEFAULTS or name in _IGNORED:
            continue
        close = difflib.get_close_matches(str(name), list(DEFAULTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ImproperlyConfigured(f"Unknown ElastiCache cache option {name!r}{hint}")
    for name in _IGNORED & given.keys():
        logger.warning("OPTIONS[%r] is a pymemcache internal and is ignored", name)
    merged = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}

    key_prefix = merged["key_prefix"]
    if not isinstance(key_prefix, str | bytes):
        raise _bad("key_prefix", "'' (not supported yet; use the cache's KEY_PREFIX)", key_prefix)
    if key_prefix:
        raise ImproperlyConfigured(
            "OPTIONS['key_prefix'] is not supported yet; use the cache's KEY_PREFIX setting"
        )
    discovery = merged["discovery"]
    if not isinstance(discovery, str) or discovery not in ("auto", "on", "off"):
        raise _bad("discovery", "'auto', 'on' or 'off'", discovery)
    if len(servers) > 1:
        if discovery == "on":
            raise ImproperlyConfigured(
                "OPTIONS['discovery'] is 'on' but LOCATION lists several servers: give the "
                "configuration endpoint alone"
            )
        discovery = "off"
    encoding = merged["encoding"]
    if not isinstance(encoding, str) or encoding.lower().replace("_", "-") not in (
        "utf-8",
        "utf8",
        "ascii",
    ):
        raise _bad("encoding", "'utf-8' or 'ascii'", encoding)
    # Accepted for compatibility; they change nothing (see the README), but a wrong type is
    # still a mistake worth hearing about.
    for name in ("use_pooling", "allow_unicode_keys", "default_noreply"):
        _flag(name, merged[name])
    max_pool_size = merged["max_pool_size"]
    if max_pool_size is None:
        max_pool_size = DEFAULTS["max_pool_size"]
    max_value_length = merged["max_value_length"]
    if max_value_length is not None:
        max_value_length = _whole(
            "max_value_length", max_value_length, MIN_VALUE_LENGTH, MAX_VALUE_LENGTH_LIMIT
        )
    native: dict[str, Any] = {
        "connect_timeout": _seconds(
            "connect_timeout", merged["connect_timeout"], allow_none=True, allow_zero=False
        ),
        "timeout": _seconds("timeout", merged["timeout"], allow_none=True, allow_zero=False),
        "max_pool_size": _whole("max_pool_size", max_pool_size, 1, MAX_POOL_SIZE),
        "pool_idle_timeout": _seconds("pool_idle_timeout", merged["pool_idle_timeout"]),
        "retry_attempts": _whole("retry_attempts", merged["retry_attempts"], 1, MAX_RETRY_ATTEMPTS),
        "retry_timeout": _seconds("retry_timeout", merged["retry_timeout"]),
        "dead_timeout": _seconds("dead_timeout", merged["dead_timeout"]),
        "no_delay": _flag("no_delay", merged["no_delay"]),
        # pymemcache takes a KeepaliveOpts object or False; a number is the idle time in seconds.
        "socket_keepalive": _keepalive_idle(merged["socket_keepalive"]),
        "ignore_exc": _flag("ignore_exc", merged["ignore_exc"]),
        "max_value_length": max_value_length,
        "serde": _serde(merged["serde"]),
        "discovery": discovery,
        # 0 means: discover at start and whenever the ring is empty, never in the background.
        "discovery_interval": _seconds(
            "discovery_interval", merged["discovery_interval"], allow_none=True
        )
        or None,
        "discovery_retry_delay": _seconds("discovery_retry_delay", merged["discovery_retry_delay"]),
        "use_vpc_ip_address": _flag("use_vpc_ip_address", merged["use_vpc_ip_address"]),
        **_tls_arguments(merged),
        **_failure_log(merged["logger"], merged["failure_log_level"]),
        "counters": _flag("counters", merged["counters"]),
        "hashing": _hashing(merged["hashing"]),
        "min_compress_len": _whole(
            "min_compress_len", merged["min_compress_len"], 0, MAX_VALUE_LENGTH_LIMIT
        ),
        "compress_level": _whole("compress_level", merged["compress_level"], 1, 9),
    }
    return Settings(
        native=tuple(sorted(native.items())),
        gevent=_gevent(merged["gevent"]),
        metrics=_metrics(merged["metrics"]),
        tracing=_tracing(merged["tracing"]),
        stampede=_stampede(merged),
    )


_HASHING = ("pymemcache", "pylibmc", "ketama")


def _hashing(value: Any) -> str:
    """``OPTIONS["hashing"]``: whose key placement the cache shares."""
    if not isinstance(value, str) or value not in _HASHING:
        raise _bad(
            "hashing",
            "'pymemcache' (as PyMemcacheCache), 'pylibmc' (as PyLibMCCache) or 'ketama' (as "
            "PyLibMCCache with behaviors={'ketama': True})",
            value,
        )
    return value


def _importable(option: str, value: str, module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"OPTIONS[{option!r}] is {value!r} but {module} cannot be imported: "
            f"pip install django-elasticache-rs[{extra}]"
        ) from error


def _metrics(value: Any) -> Literal["prometheus", "opentelemetry"] | None:
    """``OPTIONS["metrics"]``: None, "prometheus" or "opentelemetry" (its package importable)."""
    if value is None:
        return None
    if value == "prometheus" and isinstance(value, str):
        _importable("metrics", value, "prometheus_client", "prometheus")
        return "prometheus"
    if value == "opentelemetry" and isinstance(value, str):
        _importable("metrics", value, "opentelemetry.metrics", "opentelemetry")
        return "opentelemetry"
    raise _bad("metrics", "None, 'prometheus' or 'opentelemetry'", value)


def _tracing(value: Any) -> Literal["opentelemetry"] | None:
    """``OPTIONS["tracing"]``: None or "opentelemetry" (opentelemetry-api importable)."""
    if value is None:
        return None
    if value == "opentelemetry" and isinstance(value, str):
        _importable("tracing", value, "opentelemetry.trace", "opentelemetry")
        return "opentelemetry"
    raise _bad("tracing", "None or 'opentelemetry'", value)


def _gevent(value: Any) -> Literal["auto"] | bool:
    """``OPTIONS["gevent"]``: "auto", True (gevent must be importable) or False."""
    if value == "auto" and isinstance(value, str):
        return "auto"
    if not isinstance(value, bool):
        raise _bad("gevent", "'auto', True or False", value)
    if value:
        try:
            import gevent  # noqa: F401
        except ImportError as error:
            raise ImproperlyConfigured(
                "OPTIONS['gevent'] is True but gevent cannot be imported: install gevent, or "
                "leave the option at 'auto'"
            ) from error
    return value
