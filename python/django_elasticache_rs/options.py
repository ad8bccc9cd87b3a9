"""``LOCATION`` and ``OPTIONS`` of the Django backend: parsing, validation, defaults.

The option names are django-elastipymemcache's (which are pymemcache's ``HashClient``
arguments plus its discovery settings), so that moving to this backend changes ``BACKEND`` only.
"""

from __future__ import annotations

import difflib
import logging
import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

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


def parse_location(location: str | Sequence[str]) -> list[str]:
    """The server list of ``LOCATION``: a list, or a string separated by ``;`` or ``,``."""
    if isinstance(location, str):
        entries = location.replace(",", ";").split(";")
    else:
        entries = list(location)
    servers = [entry.strip() for entry in entries if entry and entry.strip()]
    if not servers:
        raise ImproperlyConfigured("CACHES LOCATION names no server")
    return servers


def _seconds(name: str, value: Any, *, allow_none: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be a number of seconds >= 0")
    return float(value)


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
    if value is None or value is False:
        return None
    if value is True:
        return 60.0
    if isinstance(value, int | float):
        return _seconds("socket_keepalive", value, allow_none=False)
    idle = getattr(value, "idle", None)
    if idle is None:
        raise ImproperlyConfigured(
            "OPTIONS['socket_keepalive'] must be a bool, seconds or KeepaliveOpts"
        )
    return float(idle)


def _tls_arguments(options: Mapping[str, Any]) -> dict[str, Any]:
    """The native client's TLS arguments from ``tls_context`` (an ``ssl.SSLContext``, as
    django-elastipymemcache takes it) and the ``tls_*`` options.

    From the context: its CA certificates (none: the system's trust store), ``verify_mode``
    and ``check_hostname``. A client certificate loaded into a context cannot be read back out
    of it: give ``tls_cert_file`` and ``tls_key_file`` instead.
    """
    context = options["tls_context"]
    files = {name: options[name] for name in ("tls_ca_file", "tls_cert_file", "tls_key_file")}
    for name, path in files.items():
        if path is not None and not isinstance(path, str | os.PathLike):
            raise ImproperlyConfigured(f"OPTIONS[{name!r}] must be a file path")
    if context is None:
        return {
            "tls": bool(options["tls"]),
            **{name: None if path is None else os.fspath(path) for name, path in files.items()},
            "tls_server_name": options["tls_server_name"],
        }
    if not isinstance(context, ssl.SSLContext):
        raise ImproperlyConfigured("OPTIONS['tls_context'] must be an ssl.SSLContext")
    return {
        "tls": True,
        "tls_ca_certs": tuple(context.get_ca_certs(binary_form=True)),
        **{name: None if path is None else os.fspath(path) for name, path in files.items()},
        "tls_server_name": options["tls_server_name"],
        "tls_verify": context.verify_mode != ssl.CERT_NONE,
        "tls_check_hostname": context.check_hostname,
    }


@dataclass(frozen=True)
class Settings:
    """Validated options: the native client's arguments and the backend's own settings."""

    native: tuple[tuple[str, Any], ...]

    def native_kwargs(self) -> dict[str, Any]:
        return dict(self.native)


def parse_options(options: Mapping[str, Any] | None, servers: Sequence[str]) -> Settings:
    """Validates ``OPTIONS`` for ``LOCATION``'s ``servers``; unknown names raise
    ``ImproperlyConfigured`` with a suggestion.

    One server is a configuration endpoint (discovery "auto" unless set); several are a
    static cluster, where discovery "on" is a contradiction.
    """
    given = dict(options or {})
    for name in given:
        if name in DEFAULTS or name in _IGNORED:
            continue
        close = difflib.get_close_matches(name, list(DEFAULTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ImproperlyConfigured(f"Unknown ElastiCache cache option {name!r}{hint}")
    for name in _IGNORED & given.keys():
        logger.warning("OPTIONS[%r] is a pymemcache internal and is ignored", name)
    merged = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}

    if merged["key_prefix"]:
        raise ImproperlyConfigured(
            "OPTIONS['key_prefix'] is not supported yet; use the cache's KEY_PREFIX setting"
        )
    discovery = merged["discovery"]
    if discovery not in ("auto", "on", "off"):
        raise ImproperlyConfigured("OPTIONS['discovery'] must be 'auto', 'on' or 'off'")
    if len(servers) > 1:
        if discovery == "on":
            raise ImproperlyConfigured(
                "OPTIONS['discovery'] is 'on' but LOCATION lists several servers: give the "
                "configuration endpoint alone"
            )
        discovery = "off"
    interval = _seconds("discovery_interval", merged["discovery_interval"], allow_none=True)
    if str(merged["encoding"]).lower().replace("_", "-") not in ("utf-8", "utf8", "ascii"):
        raise ImproperlyConfigured("OPTIONS['encoding'] must be 'utf-8' or 'ascii'")
    max_pool_size = merged["max_pool_size"]
    if max_pool_size is None:
        max_pool_size = DEFAULTS["max_pool_size"]
    if isinstance(max_pool_size, bool) or not isinstance(max_pool_size, int) or max_pool_size < 1:
        raise ImproperlyConfigured("OPTIONS['max_pool_size'] must be a whole number >= 1")
    native: dict[str, Any] = {
        "connect_timeout": _seconds("connect_timeout", merged["connect_timeout"], allow_none=True),
        "timeout": _seconds("timeout", merged["timeout"], allow_none=True),
        "max_pool_size": max_pool_size,
        "pool_idle_timeout": _seconds(
            "pool_idle_timeout", merged["pool_idle_timeout"], allow_none=False
        ),
        "retry_attempts": int(merged["retry_attempts"]),
        "retry_timeout": _seconds("retry_timeout", merged["retry_timeout"], allow_none=False),
        "dead_timeout": _seconds("dead_timeout", merged["dead_timeout"], allow_none=False),
        "no_delay": bool(merged["no_delay"]),
        # pymemcache takes a KeepaliveOpts object or False; a number is the idle time in seconds.
        "socket_keepalive": _keepalive_idle(merged["socket_keepalive"]),
        "ignore_exc": bool(merged["ignore_exc"]),
        "max_value_length": merged["max_value_length"],
        "serde": merged["serde"],
        "discovery": discovery,
        # 0 means: discover at start and whenever the ring is empty, never in the background.
        "discovery_interval": interval or None,
        "discovery_retry_delay": _seconds(
            "discovery_retry_delay", merged["discovery_retry_delay"], allow_none=False
        ),
        "use_vpc_ip_address": bool(merged["use_vpc_ip_address"]),
        **_tls_arguments(merged),
        **_failure_log(merged["logger"], merged["failure_log_level"]),
    }
    return Settings(native=tuple(sorted(native.items())))
