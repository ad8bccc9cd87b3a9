"""``LOCATION`` and ``OPTIONS`` of the Django backend: parsing, validation, defaults.

The option names are django-elastipymemcache's (which are pymemcache's ``HashClient``
arguments plus its discovery settings), so that moving to this backend changes ``BACKEND`` only.

Every option (its kind, default, bounds and meaning) is declared once, in the native module's
table (``crates/python/src/options.rs``, here ``_native.OPTIONS``): ``DEFAULTS`` comes from it,
and each value is checked by ``_native.check_option``, the check the native client applies.
What is Django's stays here: ``LOCATION`` and ``KEY_PREFIX``, unknown names and their hints,
pymemcache's internals and spellings, ``tls_context``, and what the backend does with the
options that are its own (stampede protection, gevent, the exporters).
"""

from __future__ import annotations

import difflib
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs._native import MAX_VALUE_LENGTH, OPTIONS, check_option

logger = logging.getLogger("django_elasticache_rs")

#: Every accepted option and its default (the native table's, in its order).
DEFAULTS: dict[str, Any] = {spec["name"]: spec["default"] for spec in OPTIONS}

#: What each option accepts, in the words of the error messages.
_ACCEPTS: dict[str, str] = {spec["name"]: spec["accepts"] for spec in OPTIONS}

#: The options the native client takes (the others are the backend's own).
_NATIVE: tuple[str, ...] = tuple(spec["name"] for spec in OPTIONS if spec["native"])

#: Options pymemcache accepts that only make sense for its Python internals.
_IGNORED = {"socket_module", "lock_generator", "hasher"}

#: Where a refused option of another backend's release tells the user to look.
MIGRATING = (
    "https://github.com/django-elasticache-rs/django-elasticache-rs/blob/main/docs/migrating.md"
)

#: Options of django-elastipymemcache 1.x/2.x and django-elasticache that carry over with no
#: effect here, and why (the migration page and check W006 say it).
LEGACY: dict[str, str] = {
    # 1.x: the discovery's socket timeout; 2.x popped it and used it for nothing.
    "cluster_timeout": "discovery is bounded by connect_timeout and timeout",
    # On a failed discovery, use the endpoint as the only node.
    "ignore_cluster_errors": 'discovery "auto" uses an endpoint that is plain memcached as its '
    "only node, and a failed discovery is retried",
    # django-elasticache's (pylibmc) spelling of the same.
    "IGNORE_CLUSTER_ERRORS": 'discovery "auto" uses an endpoint that is plain memcached as its '
    "only node, and a failed discovery is retried",
}

#: The django-elastipymemcache 1.x/2.x names among ``LEGACY``: those releases defaulted
#: ``ignore_exc`` to ``True`` (check W006).
ELASTIPYMEMCACHE_2X = frozenset({"cluster_timeout", "ignore_cluster_errors"})

#: Options of other backends that have no meaning here, and what replaces them.
_REPLACED: dict[str, str] = {
    # pymemcache's serializer/deserializer functions; OPTIONS["serializer"] here is a format's
    # name (see _parse_options).
    "serializer": "OPTIONS['serializer'] names a format ('pickle', 'json', 'msgpack' or a "
    "dotted path to a class with dumps() and loads()); a pymemcache serde object with "
    "serialize() and deserialize() goes in OPTIONS['serde']",
    "deserializer": "OPTIONS['serializer'] names a format, read back whatever it is; a "
    "pymemcache serde object with serialize() and deserialize() goes in OPTIONS['serde']",
    "binary": "none needed: the backend speaks memcached's text protocol; remove it",
    "username": "none: SASL is not supported (ElastiCache memcached has no SASL); remove it",
    "password": "none: SASL is not supported (ElastiCache memcached has no SASL); remove it",
    "behaviors": "OPTIONS['hashing'] ('pylibmc', or 'ketama' for the ketama behavior) and "
    "connect_timeout/timeout/no_delay/socket_keepalive in seconds",
    # pylibmc behaviors given directly as OPTIONS (django-elasticache, older Django).
    "ketama": "OPTIONS['hashing'] = 'ketama' (libmemcached's continuum, as pylibmc placed keys)",
    "tcp_nodelay": "OPTIONS['no_delay'] (on by default)",
    "tcp_keepalive": "OPTIONS['socket_keepalive']",
    "send_timeout": "OPTIONS['timeout'], in seconds (the whole operation)",
    "receive_timeout": "OPTIONS['timeout'], in seconds (the whole operation)",
    "remove_failed": "OPTIONS['retry_attempts'] (a node is marked down; its keys are not moved)",
    "distribution": "OPTIONS['hashing'] ('pylibmc' for libmemcached's default, 'ketama')",
    "hash": "OPTIONS['hashing'] (only libmemcached's default hash and ketama are supported)",
    "ketama_hash": "none: only ketama over MD5 (OPTIONS['hashing'] = 'ketama') is supported",
    "ketama_weighted": "none: only unweighted ketama (OPTIONS['hashing'] = 'ketama')",
    "no_block": "none needed: remove it (requests are pipelined per node already)",
    "cas": "none needed: remove it",
}

#: pymemcache's spellings of an ``encoding`` (Python codec names), by what they mean.
_ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "ascii": "ascii"}

#: ``max_value_length``'s upper bound: the protocol's hard limit (1 GiB).
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


def _checked(name: str, value: Any) -> Any:
    """``value`` in its canonical form, or ``ImproperlyConfigured`` naming the option and what
    it accepts (the native table's words)."""
    try:
        return check_option(name, value)
    except (TypeError, ValueError) as error:
        if getattr(error, "option", None) != name:
            raise
        raise _bad(name, _ACCEPTS[name], value) from error


class _ByIdentity:
    """An object compared and hashed by identity, so that an unhashable ``serde`` (or
    ``migrate_from`` dict or list) can be part of the shared client's key (and two equal serdes
    still get one client each)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


class _Secret:
    """A signing secret in the shared client's key: compared and hashed by value, never shown
    (``Settings`` may be printed)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Secret) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return "<secret>"


def _signing(checked: Mapping[str, Any]) -> dict[str, Any]:
    """``signing_key`` and ``signing_key_fallbacks`` for the native client: as given, or with
    ``signing_key`` None, Django's ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` (read only when
    a key may be needed: with ``sign_values``, or to verify values others signed)."""
    key = checked["signing_key"]
    fallbacks = checked["signing_key_fallbacks"]
    if key is None:
        from django.conf import settings

        try:
            key = settings.SECRET_KEY or None
        except ImproperlyConfigured:
            key = None
        if fallbacks is None:
            fallbacks = getattr(settings, "SECRET_KEY_FALLBACKS", None) or None
        if key is None and checked["sign_values"]:
            raise ImproperlyConfigured(
                "OPTIONS['sign_values'] is True but there is no key to sign with: set "
                "SECRET_KEY or OPTIONS['signing_key']"
            )
    return {
        "signing_key": None if key is None else _Secret(key),
        "signing_key_fallbacks": None if not fallbacks else _Secret(tuple(fallbacks)),
    }


def _tls_context(context: ssl.SSLContext | None) -> dict[str, Any]:
    """The native client's TLS arguments from ``tls_context`` (an ``ssl.SSLContext``, as
    django-elastipymemcache takes it): TLS on, its CA certificates (none: the system's trust
    store), ``verify_mode`` and ``check_hostname``. A client certificate loaded into a context
    cannot be read back out of it: give ``tls_cert_file`` and ``tls_key_file`` instead."""
    if context is None:
        return {}
    return {
        "tls": True,
        "tls_ca_certs": tuple(context.get_ca_certs(binary_form=True)),
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


def _stampede(options: Mapping[str, Any]) -> Stampede | None:
    """Stampede protection from the (checked) options; every one is checked, on or off: a
    mistake is heard of before it is turned on."""
    stampede = Stampede(
        lease=options["stampede_lease"],
        wait=float(options["stampede_wait"]),
        early_recompute=options["early_recompute"],
    )
    return stampede if options["stampede_protection"] else None


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
    #: Seconds between this process's hot-key reports (None: none). Not part of the shared
    #: client's key: the backend writes them at a request's end.
    hot_keys_report: float | None = field(default=None, compare=False)

    def native_kwargs(self) -> dict[str, Any]:
        return {
            name: value.value if isinstance(value, _ByIdentity | _Secret) else value
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
        # pymemcache's "serializer" is a function; ours is the name of a format.
        pymemcache_serializer = name == "serializer" and callable(given[name])
        if (name in DEFAULTS and not pymemcache_serializer) or name in _IGNORED or name in LEGACY:
            continue
        if name in _REPLACED:
            raise ImproperlyConfigured(
                f"OPTIONS[{name!r}] is another backend's option; here: {_REPLACED[name]} "
                f"(see {MIGRATING})"
            )
        close = difflib.get_close_matches(str(name), list(DEFAULTS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ImproperlyConfigured(f"Unknown ElastiCache cache option {name!r}{hint}")
    for name in _IGNORED & given.keys():
        logger.warning("OPTIONS[%r] is a pymemcache internal and is ignored", name)
    merged = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}

    # pymemcache's spellings: an encoding by any codec name of it, a bytes key prefix.
    encoding = merged["encoding"]
    if isinstance(encoding, str):
        merged["encoding"] = _ENCODINGS.get(encoding.lower().replace("_", "-"), encoding)
    key_prefix = merged["key_prefix"]
    if isinstance(key_prefix, str | bytes) and key_prefix:
        raise ImproperlyConfigured(
            "OPTIONS['key_prefix'] is not supported yet; use the cache's KEY_PREFIX setting"
        )
    if isinstance(key_prefix, bytes):
        merged["key_prefix"] = ""
    # pymemcache's max_pool_size=None: the default bound.
    if merged["max_pool_size"] is None:
        merged["max_pool_size"] = DEFAULTS["max_pool_size"]
    # Every option, as the native table says (those the client takes are checked again, by
    # the same code, when it is built).
    checked = {name: _checked(name, value) for name, value in merged.items()}

    discovery = checked["discovery"]
    if len(servers) > 1:
        if discovery == "on":
            raise ImproperlyConfigured(
                "OPTIONS['discovery'] is 'on' but LOCATION lists several servers: give the "
                "configuration endpoint alone"
            )
        discovery = "off"
    native: dict[str, Any] = {name: checked[name] for name in _NATIVE}
    native["discovery"] = discovery
    if native["serde"] is not None:
        native["serde"] = _ByIdentity(native["serde"])
    for unhashable in ("migrate_from", "local_cache"):
        if isinstance(native[unhashable], dict | list):
            # The dict (or list) of the settings, which every backend object shares.
            native[unhashable] = _ByIdentity(native[unhashable])
    native.update(_signing(checked))
    native.update(_tls_context(checked["tls_context"]))
    return Settings(
        native=tuple(sorted(native.items())),
        gevent=_gevent(checked["gevent"]),
        metrics=_metrics(checked["metrics"]),
        tracing=_tracing(checked["tracing"]),
        stampede=_stampede(checked),
        hot_keys_report=checked["hot_keys_report"],
    )


def _importable(option: str, value: str, module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError as error:
        raise ImproperlyConfigured(
            f"OPTIONS[{option!r}] is {value!r} but {module} cannot be imported: "
            f"pip install django-elasticache-rs[{extra}]"
        ) from error


def _metrics(value: Any) -> Literal["prometheus", "opentelemetry"] | None:
    """``OPTIONS["metrics"]`` (checked: None, "prometheus" or "opentelemetry"): its package
    must be importable."""
    if value == "prometheus":
        _importable("metrics", value, "prometheus_client", "prometheus")
        return "prometheus"
    if value == "opentelemetry":
        _importable("metrics", value, "opentelemetry.metrics", "opentelemetry")
        return "opentelemetry"
    return None


def _tracing(value: Any) -> Literal["opentelemetry"] | None:
    """``OPTIONS["tracing"]`` (checked: None or "opentelemetry"): opentelemetry-api must be
    importable."""
    if value == "opentelemetry":
        _importable("tracing", value, "opentelemetry.trace", "opentelemetry")
        return "opentelemetry"
    return None


def _gevent(value: Any) -> Literal["auto"] | bool:
    """``OPTIONS["gevent"]`` (checked: "auto", True or False): with True, gevent must be
    importable."""
    if value == "auto":
        return "auto"
    if value is True:
        try:
            import gevent  # noqa: F401
        except ImportError as error:
            raise ImproperlyConfigured(
                "OPTIONS['gevent'] is True but gevent cannot be imported: install gevent, or "
                "leave the option at 'auto'"
            ) from error
    return bool(value)
