"""The Django cache backend: ``django_elasticache_rs.backend.ElastiCache``.

A thin layer: Django's cache API and semantics (those of ``PyMemcacheCache``) on top of one
native client per process and configuration, shared by the backend objects Django creates per
thread and per async task. Key making, validation, hashing and value encoding run in Rust.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import numbers
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, default_key_func
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs import _green, signals
from django_elasticache_rs._futures import run
from django_elasticache_rs._native import MAX_LEASE_SECONDS, Client, Operation, lease_token
from django_elasticache_rs.exceptions import CacheClientError, CacheError
from django_elasticache_rs.locks import Lock, pauses
from django_elasticache_rs.options import (
    DEFAULTS,
    Settings,
    Stampede,
    parse_key_prefix,
    parse_location,
    parse_options,
)

__all__ = ["ElastiCache"]


# memcached reads an expiry over 30 days as a Unix time.
_MAX_RELATIVE_EXPIRY = 60 * 60 * 24 * 30
# memcached reads an expiry as a signed 32-bit number: no Unix time after 2038-01-19.
_MAX_UNIX_TIME = 2**31 - 1

#: What a get-or-lease gives for a miss: never a cached value.
_MISSING = object()
#: What a get-or-lease gives for a value found that cannot be decoded (a pickle of a class
#: renamed since, a corrupt or oversized compressed value): a miss to this caller, who then
#: asks for the lease at once rather than waiting for a computation nobody is doing.
_UNDECODABLE = object()

logger = logging.getLogger("django_elasticache_rs")

#: Lease releases running after their ``aget_or_set`` was cancelled (kept until done: the loop
#: holds tasks only weakly).
_releasing: set[asyncio.Task[None]] = set()

_clients: dict[tuple[tuple[str, ...], Settings], Client] = {}
_clients_lock = threading.Lock()


def shared_client(servers: list[str], settings: Settings) -> Client:
    """The process's native client for this configuration, created on first use.

    The client is safe across ``fork()``: a child process builds its own connections.
    """
    key = (tuple(servers), settings)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                # Its events become Django signals (`signals`), sent from a native worker.
                on_event = functools.partial(signals.deliver, tuple(servers))
                client = Client(servers, on_event=on_event, **settings.native_kwargs())
                _clients[key] = client
    return client


def exporting_clients(metrics: str) -> list[Client]:
    """The process's shared native clients whose counters ``OPTIONS["metrics"]`` exports to
    ``metrics`` ("prometheus" or "opentelemetry"): what the exporters read."""
    return [client for (_, s), client in list(_clients.items()) if s.metrics == metrics]


def _refused(error: Exception) -> ImproperlyConfigured:
    """``ImproperlyConfigured`` for what the native client refused to be built with. Its own
    messages start with the argument's name, which is the option's (``servers`` is
    ``LOCATION``, ``tls_ca_certs`` comes from ``tls_context``); a conversion error names it
    in a note ("while processing 'x'")."""
    notes = list(getattr(error, "__notes__", ()))
    message = " ".join([str(error), *notes])
    argument = str(error).split(" ", 1)[0].rstrip(":")
    for note in notes:
        if note.startswith("while processing '"):
            argument = note.split("'")[1]
    if argument == "servers":
        where = "CACHES LOCATION"
    elif argument == "tls_ca_certs":
        where = "OPTIONS['tls_context']"
    elif argument in DEFAULTS:
        where = f"OPTIONS[{argument!r}]"
    else:
        where = "CACHES OPTIONS"
    return ImproperlyConfigured(f"{where} is refused: {message}")


def forget_shared_clients() -> None:
    """Drops this process's shared native clients (for tests that build many configurations):
    each one's connections close and its discovery thread stops once no backend uses it."""
    with _clients_lock:
        _clients.clear()


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
        # What the blocking methods call: the native client, whose calls block the thread, or
        # under gevent the same operations run by the gevent driver, which yield to the hub.
        # Decided per backend object: Django makes one per thread (per greenlet under gevent),
        # after gevent's monkey-patching even when the app was loaded before it (--preload).
        gevent = self._settings.gevent
        self._green = gevent is True or (gevent == "auto" and _green.patched())
        self._blocking: Client | _green.GreenClient = (
            _green.GreenClient(self._native_client) if self._green else self._native_client
        )

    @property
    def _native(self) -> Client:
        return self._native_client

    @property
    def client(self) -> Client:
        """The shared native client behind this backend."""
        return self._native

    @property
    def servers(self) -> list[str]:
        """The nodes in use (``host:port``); with discovery, empty until the first operation."""
        return self._native.servers

    def metrics(self) -> dict[str, Any]:
        """What this process's client has done so far, per node and per client: requests by
        command, hits and misses, errors by kind, latency, discoveries... (the README's
        "Observability" section describes each field). Shared by every backend object of
        this configuration in the process; reading it costs a few atomic loads per node."""
        return self._native_client.metrics()

    @property
    def config_version(self) -> int | None:
        """The version of the discovered cluster configuration in use (None without discovery
        or before the first discovery)."""
        return self._native.config_version

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
        if timeout <= _MAX_RELATIVE_EXPIRY:
            return int(float(timeout))
        now = int(time.time())
        if timeout > _MAX_UNIX_TIME - now:
            return 0
        return now + int(float(timeout))

    def _key(self, key: Any, version: int | None) -> Any:
        # With a custom key function the native client receives the finished key.
        return key if self._prefix is not None else self.make_key(key, version)

    def _version(self, version: int | None) -> int:
        return self.version if version is None else version

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return self._blocking.get(
            self._key(key, version), default, self._prefix, self._version(version)
        )

    def has_key(self, key: Any, version: int | None = None) -> bool:
        return self._blocking.contains(
            self._key(key, version), self._prefix, self._version(version)
        )

    def set(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        # A failed set deletes the old value itself, in the same native operation.
        key = self._key(key, version)
        v = self._version(version)
        self._blocking.set(key, value, self.get_backend_timeout(timeout), self._prefix, v)

    def add(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self._key(key, version)
        exptime = self.get_backend_timeout(timeout)
        return self._blocking.add(key, value, exptime, self._prefix, self._version(version))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self._key(key, version)
        exptime = self.get_backend_timeout(timeout)
        return self._blocking.touch(key, exptime, self._prefix, self._version(version))

    def delete(self, key: Any, version: int | None = None) -> bool:
        return self._blocking.delete(self._key(key, version), self._prefix, self._version(version))

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        if self._prefix is not None:
            return self._blocking.get_many(keys, self._prefix, self._version(version))
        made = {self.make_key(key, version): key for key in keys}
        found = self._blocking.get_many(made, None)
        return {made[key]: value for key, value in found.items()}

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        exptime = self.get_backend_timeout(timeout)
        if self._prefix is not None:
            return self._blocking.set_many(data, exptime, self._prefix, self._version(version))
        made = {self.make_key(key, version): key for key in data}
        failed = self._blocking.set_many(
            {k: data[original] for k, original in made.items()}, exptime
        )
        return [made[key] for key in failed]

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        if self._prefix is not None:
            self._blocking.delete_many(keys, self._prefix, self._version(version))
        else:
            self._blocking.delete_many([self.make_key(k, version) for k in keys])

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
        value: int | None
        if initial is not None:
            value = self._drive(self._count_or_create(key, delta, initial, timeout, version))
        else:
            value = self._blocking.incr(
                self._key(key, version), delta, self._prefix, self._version(version)
            )
        if value is None:
            raise ValueError(f"Key '{key}' not found")
        return value

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        if not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return self.incr(key, -delta, version)

    def clear(self) -> None:
        self._blocking.flush_all()

    # What Django's API leaves out (README "Stampede protection" and "Beyond Django's API"):
    # native operations, run by `_drive` (blocking) or `run` (asyncio).

    def _drive(self, operation: Operation) -> Any:
        """Runs ``operation`` the way this backend's blocking methods wait: on this thread, or
        under gevent yielding to the hub."""
        if self._green:
            return _green.run(operation)
        return operation.wait()

    def _pause(self, seconds: float) -> None:
        if self._green:
            _green.sleep(seconds)
        else:
            time.sleep(seconds)

    def _early_recompute(
        self, stampede: Stampede, early_recompute: int | None, timeout: Any
    ) -> int:
        """The early-recompute window of a protected ``get_or_set`` (0: off): the argument's, or
        the option's, at most the value's own timeout less a second. A window as long as the
        timeout would win a recompute at every read of a value just stored: caching would
        stop; capped, a value is served for at least a second before it is refreshed."""
        if early_recompute is None:
            window = stampede.early_recompute or 0
        elif (
            isinstance(early_recompute, bool)
            or not isinstance(early_recompute, int)
            or not 0 <= early_recompute <= MAX_LEASE_SECONDS
        ):
            raise ValueError(
                "early_recompute must be None (the option's), 0 (off) or whole seconds up to "
                f"{MAX_LEASE_SECONDS}, not {early_recompute!r}"
            )
        else:
            window = early_recompute
        if not window:
            return 0
        exptime = self.get_backend_timeout(timeout)
        if exptime == 0:
            return window  # never expires: memcached never reports it within a window
        if exptime < 0:
            return 0  # expired at once: nothing to refresh
        lifetime = exptime if exptime <= _MAX_RELATIVE_EXPIRY else exptime - int(time.time())
        return max(min(window, lifetime - 1), 0)

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
        stampede = self._settings.stampede
        if stampede is None or not callable(default):
            return super().get_or_set(key, default, timeout=timeout, version=version)
        early = self._early_recompute(stampede, early_recompute, timeout)
        made, v, prefix = self._key(key, version), self._version(version), self._prefix
        lease, token, ask = stampede.lease, lease_token(), self._blocking.get_or_lease
        value, won = ask(
            made, lease, early, _MISSING, prefix, v, token=token, undecodable=_UNDECODABLE
        )
        give_up: float | None = None
        while not won:
            if value is _UNDECODABLE:
                # A miss to this caller: ask for the lease at once, without reading the key.
                value, won = ask(made, lease, early, _MISSING, prefix, v, token=token, take=True)
                continue
            if value is not _MISSING:
                return value
            # Another caller computes it: wait for its value, bounded.
            if give_up is None:
                give_up, waits = time.monotonic() + stampede.wait, pauses()
            if time.monotonic() >= give_up:
                break
            self._pause(next(waits))
            value, won = ask(
                made, lease, early, _MISSING, prefix, v, token=token, undecodable=_UNDECODABLE
            )
        # Won (the lease, or an early recompute), or waited long enough: compute it here.
        leased = won and value is _MISSING
        try:
            value = default()
            self.set(key, value, timeout, version)
        finally:
            if leased:
                # Stored (or failed): the next miss may be computed at once.
                self._release_lease(made, token, v)
        return value

    def _release_lease(self, made: Any, token: bytes, version: int) -> None:
        """Ends this caller's lease (its token only). A failure is logged, never raised: the
        value is computed and the lease runs out by itself, and an exception here would hide
        the computation's own."""
        try:
            self._drive(self._native_client.start_release_lease(made, token, self._prefix, version))
        except CacheError as error:
            logger.warning("a stampede lease could not be released: %s", type(error).__name__)

    def ttl(self, key: Any, version: int | None = None) -> int | None:
        """Seconds ``key`` has left: ``None`` when it never expires, 0 when it is not in the
        cache. Needs memcached 1.6's meta commands on the key's node (else
        ``CacheClientError``)."""
        seconds: int | None = self._drive(
            self._native_client.start_ttl(
                self._key(key, version), self._prefix, self._version(version)
            )
        )
        return seconds

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
        return self._native_client.start_incr_or_create(
            self._key(key, version),
            delta,
            initial,
            self.get_backend_timeout(timeout),
            self._prefix,
            self._version(version),
        )

    def close(self, **kwargs: Any) -> None:
        """Called by Django at the end of each request: connections stay pooled for the next.
        With Prometheus in multiprocess mode, the counters are pushed (at most once a second)."""
        if self._exporting:
            from django_elasticache_rs.prometheus import at_request_end

            at_request_end()

    # Async API: the same operations, their I/O done on the running event loop (`_futures`).

    async def aget(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        return await run(
            self._native_client.start_get(
                self._key(key, version), default, self._prefix, self._version(version)
            )
        )

    async def ahas_key(self, key: Any, version: int | None = None) -> bool:
        found: bool = await run(
            self._native_client.start_contains(
                self._key(key, version), self._prefix, self._version(version)
            )
        )
        return found

    async def aset(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        # As `set`: a failed set deletes the old value itself, in the same native operation.
        key = self._key(key, version)
        exptime = self.get_backend_timeout(timeout)
        await run(
            self._native_client.start_set(key, value, exptime, self._prefix, self._version(version))
        )

    async def aadd(
        self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self._key(key, version)
        exptime = self.get_backend_timeout(timeout)
        added: bool = await run(
            self._native_client.start_add(key, value, exptime, self._prefix, self._version(version))
        )
        return added

    async def atouch(
        self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        key = self._key(key, version)
        exptime = self.get_backend_timeout(timeout)
        touched: bool = await run(
            self._native_client.start_touch(key, exptime, self._prefix, self._version(version))
        )
        return touched

    async def adelete(self, key: Any, version: int | None = None) -> bool:
        deleted: bool = await run(
            self._native_client.start_delete(
                self._key(key, version), self._prefix, self._version(version)
            )
        )
        return deleted

    async def aget_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        if self._prefix is not None:
            found: dict[Any, Any] = await run(
                self._native_client.start_get_many(keys, self._prefix, self._version(version))
            )
            return found
        made = {self.make_key(key, version): key for key in keys}
        found = await run(self._native_client.start_get_many(made, None))
        return {made[key]: value for key, value in found.items()}

    async def aset_many(
        self,
        data: Mapping[Any, Any],
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        exptime = self.get_backend_timeout(timeout)
        if self._prefix is not None:
            failed: list[Any] = await run(
                self._native_client.start_set_many(
                    data, exptime, self._prefix, self._version(version)
                )
            )
            return failed
        made = {self.make_key(key, version): key for key in data}
        mapping = {k: data[original] for k, original in made.items()}
        failed = await run(self._native_client.start_set_many(mapping, exptime))
        return [made[key] for key in failed]

    async def adelete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        if self._prefix is not None:
            await run(
                self._native_client.start_delete_many(keys, self._prefix, self._version(version))
            )
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
        else:
            operation = self._native_client.start_incr(
                self._key(key, version), delta, self._prefix, self._version(version)
            )
        value: int | None = await run(operation)
        if value is None:
            raise ValueError(f"Key '{key}' not found")
        return value

    async def adecr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        if not isinstance(delta, int):
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        return await self.aincr(key, -delta, version)

    async def aclear(self) -> None:
        await run(self._native_client.start_flush_all())

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
        stampede = self._settings.stampede
        if stampede is None or not callable(default):
            return await super().aget_or_set(key, default, timeout=timeout, version=version)
        early = self._early_recompute(stampede, early_recompute, timeout)
        made, v, prefix = self._key(key, version), self._version(version), self._prefix
        lease, token, start = stampede.lease, lease_token(), self._native_client.start_get_or_lease
        give_up: float | None = None
        take = False
        while True:
            operation = start(
                made,
                lease,
                early,
                _MISSING,
                prefix,
                v,
                token=token,
                undecodable=_UNDECODABLE,
                take=take,
            )
            try:
                value, won = await run(operation)
            except asyncio.CancelledError:
                # The lease may be won on the server already, its answer never read: end it
                # (the token is this call's, so nobody else's lease is touched).
                self._release_later(made, token, v)
                raise
            if won:
                break
            if value is _UNDECODABLE:
                # A miss to this caller: ask for the lease at once, without reading the key.
                take = True
                continue
            if value is not _MISSING:
                return value
            take = False
            if give_up is None:
                give_up, waits = time.monotonic() + stampede.wait, pauses()
            if time.monotonic() >= give_up:
                break
            await asyncio.sleep(next(waits))
        leased = won and value is _MISSING
        try:
            # Called as Django's own aget_or_set calls it: not awaited.
            value = default()
            await self.aset(key, value, timeout, version)
        except BaseException:
            if leased:
                # In the background: a cancelled task must not wait on the cache, and the
                # error is the caller's to see, not the release's.
                self._release_later(made, token, v)
            raise
        if leased:
            await self._arelease_lease(made, token, v)
        return value

    async def _arelease_lease(self, made: Any, token: bytes, version: int) -> None:
        """``_release_lease`` for async code."""
        try:
            await run(self._native_client.start_release_lease(made, token, self._prefix, version))
        except CacheError as error:
            logger.warning("a stampede lease could not be released: %s", type(error).__name__)

    def _release_later(self, made: Any, token: bytes, version: int) -> None:
        task = asyncio.ensure_future(self._arelease_lease(made, token, version))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)

    async def attl(self, key: Any, version: int | None = None) -> int | None:
        seconds: int | None = await run(
            self._native_client.start_ttl(
                self._key(key, version), self._prefix, self._version(version)
            )
        )
        return seconds

    async def aclose(self, **kwargs: Any) -> None:
        """Nothing to release: connections stay pooled."""
