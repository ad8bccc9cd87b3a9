"""The Django cache backend: ``django_elasticache_rs.backend.ElastiCache``.

A thin layer: Django's cache API and semantics (those of ``PyMemcacheCache``) on top of one
native client per process and configuration, shared by the backend objects Django creates per
thread and per async task. Key making, validation, hashing and value encoding run in Rust.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs import _green, _registry, hot_key_reports, stampede
from django_elasticache_rs._futures import run
from django_elasticache_rs._native import Client, Operation
from django_elasticache_rs._registry import exporting_clients, forget_shared_clients
from django_elasticache_rs.exceptions import CacheClientError
from django_elasticache_rs.handle import MAX_RELATIVE_EXPIRY, Handle
from django_elasticache_rs.locks import Lock
from django_elasticache_rs.options import (
    DEFAULTS,
    Settings,
    parse_key_prefix,
    parse_location,
    parse_options,
)

# The client registry's functions were first defined here: still importable from here.
__all__ = ["ElastiCache", "exporting_clients", "forget_shared_clients", "shared_client"]


# memcached reads an expiry as a signed 32-bit number: no Unix time after 2038-01-19.
_MAX_UNIX_TIME = 2**31 - 1


def shared_client(servers: list[str], settings: Settings) -> Client:
    """The process's native client for this configuration (``_registry.shared_client``), its
    events sent as signals by ``ElastiCache``."""
    return _registry.shared_client(servers, settings, sender=ElastiCache)


def _refused(error: Exception) -> ImproperlyConfigured:
    """``ImproperlyConfigured`` for what the native client refused to be built with. Its
    refusals name their argument in ``error.option``, which is the option's (``servers`` is
    ``LOCATION``, ``tls_ca_certs`` comes from ``tls_context``)."""
    argument = getattr(error, "option", None)
    if argument == "servers":
        where = "CACHES LOCATION"
    elif argument == "tls_ca_certs":
        where = "OPTIONS['tls_context']"
    elif argument in DEFAULTS:
        where = f"OPTIONS[{argument!r}]"
    else:
        where = "CACHES OPTIONS"
    message = " ".join([str(error), *getattr(error, "__notes__", ())])
    return ImproperlyConfigured(f"{where} is refused: {message}")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def command(operation: str | None = None, keys: str | None = "key") -> Callable[[_Method], _Method]:
    """Declares a blocking cache method as one memcached command, written once: its async twin
    (``a`` and its name) is generated from it into the class (``scripts/generate.py``, checked
    by a test), and the exporters trace both as ``operation`` (the method's name when not
    given), the keys passed as ``keys`` says (see ``ElastiCache.COMMANDS``). The method is
    returned as it is: nothing is added to its calls."""

    def declare(method: _Method) -> _Method:
        setattr(method, _DECLARED, (operation or method.__name__, keys))
        return method

    return declare


_DECLARED = "_elasticache_command"


def _declared(namespace: Mapping[str, Any]) -> tuple[tuple[str, str, str | None], ...]:
    """The commands declared with ``@command`` in a class body, in their order."""
    return tuple(
        (name, *getattr(method, _DECLARED))
        for name, method in namespace.items()
        if hasattr(method, _DECLARED)
    )


class ElastiCache(BaseCache):
    """Django cache backend for ElastiCache (memcached) clusters."""

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        try:
            super().__init__(params)
        except OverflowError as error:  # Django's int(TIMEOUT) of an infinity
            raise ImproperlyConfigured(
                f"CACHES TIMEOUT must be a number of seconds or None, not {params.get('TIMEOUT')!r}"
            ) from error
        self._servers = parse_location(server)
        self._settings = parse_options(params.get("OPTIONS"), self._servers)
        # With Django's own key function the key is made in Rust; otherwise made here and
        # passed as is (prefix None).
        self._prefix: str | None = None
        if self.key_func is default_key_func:
            self._prefix = self.key_prefix = parse_key_prefix(self.key_prefix)
        # Built now, not at the first request, so that whatever the native client refuses (an
        # address it cannot parse, TLS files it cannot load) fails as Django builds the cache.
        # Building it opens no socket and starts no thread.
        try:
            self._native_client: Client = shared_client(self._servers, self._settings)
        except (ValueError, TypeError, OverflowError, CacheClientError) as error:
            raise _refused(error) from error
        # What the blocking methods call: the native client, whose calls block the thread, or
        # under gevent the same operations run by the gevent driver, which yield to the hub.
        # Decided per backend object: Django makes one per thread (per greenlet under gevent),
        # after gevent's monkey-patching even when the app was loaded before it (--preload).
        gevent = self._settings.gevent
        green = gevent is True or (gevent == "auto" and _green.patched())
        self._blocking: Client | _green.GreenClient = (
            _green.GreenClient(self._native_client) if green else self._native_client
        )
        self._handle = Handle(
            client=self._native_client,
            prefix=self._prefix,
            version=self.version,
            green=green,
            calls=self._blocking,
            key_func=None if self._prefix is not None else self.key_func,
            key_prefix=self.key_prefix,
        )
        # Exporters are set up once per process; spans wrap this object's methods.
        self._exporting = self._settings.metrics == "prometheus"
        if self._exporting:
            from django_elasticache_rs import prometheus

            prometheus.install()
        if self._settings.metrics == "opentelemetry":
            from django_elasticache_rs import otel

            otel.register_metrics()
        if self._settings.tracing == "opentelemetry":
            from django_elasticache_rs import otel

            otel.instrument(self)

    @property
    def handle(self) -> Handle:
        """The native client, key prefix, version and driver of this backend, for what is built
        on it (locks, stampede protection, the exporters): see ``django_elasticache_rs.handle``."""
        return self._handle

    @property
    def _native(self) -> Client:
        return self._native_client

    @property
    def client(self) -> Client:
        """The shared native client behind this backend."""
        return self._native_client

    @property
    def _cache(self) -> Client:
        """What third-party code written for Django's memcached backends reaches for as the raw
        client: here the native client (``client``). It is not a pymemcache ``HashClient``: its
        ``get``, ``set``, ``add``, ``delete``, ``get_many``, ``set_many``, ``incr``, ``touch``,
        ``flush_all`` and ``stats`` take the key as given (no ``KEY_PREFIX``/version unless
        passed), and it has no ``get_multi`` or per-server ``clients``."""
        return self._native_client

    @property
    def servers(self) -> list[str]:
        """The nodes in use (``host:port``); with discovery, empty until the first operation."""
        return self._native_client.servers

    def metrics(self) -> dict[str, Any]:
        """What this process's client has done so far, per node and per client: requests by
        command, hits and misses, errors by kind, latency, discoveries... (the README's
        "Observability" section describes each field). Shared by every backend object of
        this configuration in the process; reading it costs a few atomic loads per node."""
        return self._native_client.metrics()

    def hot_keys(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` keys this process reads most (one read in ``hot_keys_sample`` sampled, a
        bounded top-k per node), most read first: ``{"key", "version", "node",
        "reads_per_second"}``, the key as passed to ``get`` (with Django's default key
        function; with a custom one, the key as it made it, and ``version`` None). Keys can
        carry personal data: nothing of this is exported to metrics."""
        return [
            {"node": node, **self._user_key(key), "reads_per_second": rate}
            for node, key, rate in self._native_client.hot_keys(n)
        ]

    def largest_values(self, n: int = 10) -> list[dict[str, Any]]:
        """The ``n`` largest values this process read (sampled as ``hot_keys``), largest
        first: ``{"key", "version", "node", "bytes"}`` (bytes as stored)."""
        return [
            {"node": node, **self._user_key(key), "bytes": size}
            for node, key, size in self._native_client.largest_values(n)
        ]

    def _user_key(self, made: str) -> dict[str, Any]:
        """The key and version a made key came from (Django's default key function:
        ``prefix:version:key``); a key made otherwise as it is."""
        head = f"{self._prefix}:"
        if self._prefix is not None and made.startswith(head):
            version, sep, key = made[len(head) :].partition(":")
            if sep and version.lstrip("-").isdigit():
                return {"key": key, "version": int(version)}
        return {"key": made, "version": None}

    @property
    def config_version(self) -> int | None:
        """The version of the discovered cluster configuration in use (None without discovery
        or before the first discovery)."""
        return self._native_client.config_version

    def get_backend_timeout(self, timeout: float | object | None = DEFAULT_TIMEOUT) -> int:
        """Django's timeout as memcached's expiry: 0 never expires, -1 is already expired, and
        more than 30 days is written as a Unix time.

        ``None``, and a timeout past what memcached can express (a Unix time after
        2038-01-19), never expire; a timeout under a second (negative ones included, however
        large) has already expired. A timeout that is not a number raises ``TypeError``; NaN
        raises ``ValueError``.
        """
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return 0
        if isinstance(timeout, numbers.Real) and not isinstance(timeout, int | float):
            timeout = float(timeout)  # a Fraction, say
        if not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds or None, not {timeout!r}")
        # Compared as given: an int too large for a float is not an OverflowError.
        if isinstance(timeout, float) and math.isnan(timeout):
            raise ValueError("timeout must be a number of seconds or None, not nan")
        if timeout < 1:
            return -1
        if timeout <= MAX_RELATIVE_EXPIRY:
            return int(float(timeout))
        now = int(time.time())
        if timeout > _MAX_UNIX_TIME - now:
            return 0
        return now + int(float(timeout))

    # What each native call takes for a Django key and version: the key (as given when the
    # native client makes keys, else made here by the custom key function), then the scope,
    # (prefix, version). The blocking methods call `_blocking` (the native client or its
    # gevent driver), their async twins await `run` of the same call's `start_*` operation.

    def _at(self, key: Any, version: int | None) -> tuple[Any, str | None, int]:
        """What a single-key native call takes: the key, the prefix, the version."""
        prefix = self._prefix
        if prefix is None:
            key = self.make_key(key, version)
        return key, prefix, self.version if version is None else version

    def _scope(self, version: int | None) -> tuple[str | None, int]:
        """What a many-key native call takes after the keys: the prefix, the version."""
        return self._prefix, self.version if version is None else version

    def _made(self, keys: Iterable[Any], version: int | None) -> dict[Any, Any]:
        """With a custom key function: each key made, to the caller's key."""
        return {self.make_key(key, version): key for key in keys}

    @command()
    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key, prefix, v = self._at(key, version)
        return self._blocking.get(key, default, prefix, v)

    @command("get")
    def has_key(self, key: Any, version: int | None = None) -> bool:
        key, prefix, v = self._at(key, version)
        return self._blocking.contains(key, prefix, v)

    @command()
    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        # A failed set deletes the old value itself, in the same native operation.
        key, prefix, v = self._at(key, version)
        self._blocking.set(key, value, self.get_backend_timeout(timeout), prefix, v)

    @command()
    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key, prefix, v = self._at(key, version)
        return self._blocking.add(key, value, self.get_backend_timeout(timeout), prefix, v)

    @command()
    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key, prefix, v = self._at(key, version)
        return self._blocking.touch(key, self.get_backend_timeout(timeout), prefix, v)

    @command()
    def delete(self, key: Any, version: int | None = None) -> bool:
        key, prefix, v = self._at(key, version)
        return self._blocking.delete(key, prefix, v)

    @command(keys="keys")
    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        if self._prefix is not None:
            prefix, v = self._scope(version)
            return self._blocking.get_many(keys, prefix, v)
        made = self._made(keys, version)
        return _originals(self._blocking.get_many(made, None), made)

    @command(keys="keys")
    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        exptime = self.get_backend_timeout(timeout)
        if self._prefix is not None:
            prefix, v = self._scope(version)
            return self._blocking.set_many(data, exptime, prefix, v)
        made = self._made(data, version)
        failed = self._blocking.set_many(_values(data, made), exptime)
        return [made[key] for key in failed]

    @command(keys="keys")
    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        if self._prefix is not None:
            prefix, v = self._scope(version)
            self._blocking.delete_many(keys, prefix, v)
        else:
            self._blocking.delete_many([self.make_key(k, version) for k in keys])

    @command()
    def incr(
        self,
        key: Any,
        delta: int = 1,
        version: int | None = None,
        *,
        initial: int | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> int:
        """Django's ``incr``; with ``initial``, a missing counter is created holding ``initial``
        (returned, the delta not applied) with ``timeout``, atomically across clients."""
        # A delta that is not an int raises TypeError, one of 2**64 or more in magnitude
        # ValueError (the native client words both).
        if initial is not None:
            operation = self._count_or_create(key, delta, initial, timeout, version)
            return _counted(key, self._handle.drive(operation))
        made, prefix, v = self._at(key, version)
        return _counted(key, self._blocking.incr(made, delta, prefix, v))

    @command()
    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -_delta(delta), version)

    @command("flush_all", keys=None)
    def clear(self) -> None:
        self._blocking.flush_all()

    # What Django's API leaves out (README "Stampede protection" and "Beyond Django's API"),
    # built on the handle: `locks`, `stampede`, native operations run by `handle.drive`.

    def get_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        early_recompute: int | None = None,
    ) -> Any:
        """Django's ``get_or_set``. With a callable ``default`` and stampede protection on (the
        default), one caller across every process sharing the cluster computes a missing value
        while the others wait for it (at most ``OPTIONS["stampede_wait"]`` seconds, then compute
        it themselves); with ``early_recompute`` (seconds, or ``OPTIONS["early_recompute"]``;
        at most ``timeout`` less a second), one caller refreshes a value that close to its expiry
        while the others keep getting the current one. A value that cannot be decoded is a
        miss. See the README's "Stampede protection"."""
        protection = self._settings.stampede
        if protection is None or not callable(default):
            return super().get_or_set(key, default, timeout=timeout, version=version)
        return stampede.get_or_set(
            self, self._handle, protection, key, default, timeout, version, early_recompute
        )

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Seconds ``key`` has left: ``None`` when it never expires, 0 when it is not in the
        cache. Needs memcached 1.6's meta commands on the key's node (else
        ``CacheClientError``)."""
        seconds: int | None = self._handle.drive(self._ttl(key, version))
        return seconds

    def _ttl(self, key: Any, version: int | None) -> Operation:
        return self._native_client.start_ttl(*self._at(key, version))

    def lock(
        self,
        key: Any,
        timeout: Any = 60,
        blocking_timeout: float | None = None,
        version: int | None = None,
    ) -> Lock:
        """A lock shared by every client of the cluster, held while ``key`` holds its token
        (see ``django_elasticache_rs.locks.Lock``); use it with ``with`` or ``async with``."""
        return Lock(self, key, timeout, blocking_timeout, version)

    def _count_or_create(
        self, key: Any, delta: int, initial: int, timeout: Any, version: int | None
    ) -> Operation:
        made, prefix, v = self._at(key, version)
        exptime = self.get_backend_timeout(timeout)
        return self._native_client.start_incr_or_create(made, delta, initial, exptime, prefix, v)

    def close(self, **kwargs: Any) -> None:
        """Called by Django at the end of each request: connections stay pooled for the next.
        With Prometheus in multiprocess mode, the counters are pushed (at most once a second);
        with ``hot_keys_report``, this process's hot keys are written when due."""
        if self._exporting:
            from django_elasticache_rs.prometheus import at_request_end

            at_request_end()
        interval = self._settings.hot_keys_report
        if interval is not None:
            hot_key_reports.at_request_end(
                self._handle, interval, self.hot_keys, self.largest_values
            )

    # Async API: the same operations, their I/O done on the running event loop (`_futures`).

    async def aget_or_set(
        self,
        key: Any,
        default: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
        *,
        early_recompute: int | None = None,
    ) -> Any:
        """``get_or_set`` for async code: the waits poll on the event loop, never blocking it.
        Cancelled, it ends the lease it may have won (in the background)."""
        protection = self._settings.stampede
        if protection is None or not callable(default):
            return await super().aget_or_set(key, default, timeout=timeout, version=version)
        return await stampede.aget_or_set(
            self, self._handle, protection, key, default, timeout, version, early_recompute
        )

    async def attl(self, key: Any, version: int | None = None) -> int | None:
        seconds: int | None = await run(self._ttl(key, version))
        return seconds

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing to release: connections stay pooled."""

    # The async twin of each method declared with `@command`: its body with each call of the
    # blocking client (`self._blocking.NAME(...)`) awaiting the same call's operation
    # (`run(self._native_client.start_NAME(...))`), `self._handle.drive(...)` awaiting
    # `run(...)`, and a command's own twin awaited for the command.
    # Generated from the commands' declarations by scripts/generate.py: do not edit.
    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key, prefix, v = self._at(key, version)
        return await run(self._native_client.start_get(key, default, prefix, v))

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        key, prefix, v = self._at(key, version)
        result: bool = await run(self._native_client.start_contains(key, prefix, v))
        return result

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        key, prefix, v = self._at(key, version)
        await run(
            self._native_client.start_set(key, value, self.get_backend_timeout(timeout), prefix, v)
        )

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key, prefix, v = self._at(key, version)
        result: bool = await run(
            self._native_client.start_add(key, value, self.get_backend_timeout(timeout), prefix, v)
        )
        return result

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key, prefix, v = self._at(key, version)
        result: bool = await run(
            self._native_client.start_touch(key, self.get_backend_timeout(timeout), prefix, v)
        )
        return result

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        key, prefix, v = self._at(key, version)
        result: bool = await run(self._native_client.start_delete(key, prefix, v))
        return result

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        if self._prefix is not None:
            prefix, v = self._scope(version)
            result: dict[Any, Any] = await run(self._native_client.start_get_many(keys, prefix, v))
            return result
        made = self._made(keys, version)
        return _originals(await run(self._native_client.start_get_many(made, None)), made)

    async def aset_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        exptime = self.get_backend_timeout(timeout)
        if self._prefix is not None:
            prefix, v = self._scope(version)
            result: list[Any] = await run(
                self._native_client.start_set_many(data, exptime, prefix, v)
            )
            return result
        made = self._made(data, version)
        failed = await run(self._native_client.start_set_many(_values(data, made), exptime))
        return [made[key] for key in failed]

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        if self._prefix is not None:
            prefix, v = self._scope(version)
            await run(self._native_client.start_delete_many(keys, prefix, v))
        else:
            await run(
                self._native_client.start_delete_many([self.make_key(k, version) for k in keys])
            )

    async def aincr(
        self,
        key: Any,
        delta: int = 1,
        version: int | None = None,
        *,
        initial: int | None = None,
        timeout: Any = DEFAULT_TIMEOUT,
    ) -> int:
        if initial is not None:
            operation = self._count_or_create(key, delta, initial, timeout, version)
            return _counted(key, await run(operation))
        made, prefix, v = self._at(key, version)
        return _counted(key, await run(self._native_client.start_incr(made, delta, prefix, v)))

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return await self.aincr(key, -_delta(delta), version)

    async def aclear(self) -> None:
        await run(self._native_client.start_flush_all())

    # End of the generated twins.

    #: The cache methods that are one memcached command each (their ``a*`` twins too), as
    #: declared with ``@command``: method, the command's name (what a span is named), and how
    #: the keys are passed: "key" as the first argument, "keys" as an iterable or mapping
    #: first, or None. What the exporters wrap (``otel.instrument``).
    COMMANDS: ClassVar[tuple[tuple[str, str, str | None], ...]] = _declared(vars())


# What the twins share beyond the native call.


def _originals(found: dict[Any, Any], made: dict[Any, Any]) -> dict[Any, Any]:
    """A custom key function's ``get_many``: what was found, by the caller's keys."""
    return {made[key]: value for key, value in found.items()}


def _values(data: Mapping[Any, Any], made: dict[Any, Any]) -> dict[Any, Any]:
    """A custom key function's ``set_many``: the values, by the keys made."""
    return {key: data[original] for key, original in made.items()}


def _counted(key: Any, value: int | None) -> int:
    """``incr``'s answer: the counter, or ``ValueError`` for a key not found (Django's)."""
    if value is None:
        raise ValueError(f"Key '{key}' not found")
    return value


def _delta(delta: Any) -> int:
    """``decr``'s delta, which is negated: an int (``incr`` checks it otherwise)."""
    if not isinstance(delta, int):
        raise TypeError(f"delta must be an int, not {type(delta).__name__}")
    return delta
