"""Stampede protection: ``get_or_set`` and ``aget_or_set`` with a callable default, when
``OPTIONS["stampede"]`` is on (README "Stampede protection").

One caller across every process sharing the cluster computes a missing value while the others
wait for it, bounded; with an early-recompute window, one caller refreshes a value close to its
expiry while the others keep getting the current one. Built on the cache's public API (``set``,
``aset``, ``get_backend_timeout``) and its ``handle`` (``django_elasticache_rs.handle``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from typing import Any, Protocol

from django_elasticache_rs._futures import run
from django_elasticache_rs._native import MAX_LEASE_SECONDS, Undecodable
from django_elasticache_rs.exceptions import CacheError
from django_elasticache_rs.handle import MAX_RELATIVE_EXPIRY, Handle, pauses
from django_elasticache_rs.options import Stampede

__all__ = ["aget_or_set", "get_or_set"]

logger = logging.getLogger("django_elasticache_rs")

#: What a get-or-lease gives for a miss: never a cached value.
_MISSING = object()

#: What makes each call's lease token unique: this process's random prefix (made anew in a
#: forked child, whose counter starts where its parent's stood) and a counter. Cheaper than
#: randomness per call, which a hit would pay for without ever taking a lease.
_token_prefix = os.urandom(8).hex().encode()
_token_numbers = itertools.count()


def _new_token_prefix() -> None:
    global _token_prefix
    _token_prefix = os.urandom(8).hex().encode()


os.register_at_fork(after_in_child=_new_token_prefix)


def lease_token() -> bytes:
    """A token for one call's lease, unique across processes and calls."""
    return b"%s:%x" % (_token_prefix, next(_token_numbers))


#: Lease releases running after their ``aget_or_set`` was cancelled (kept until done: the loop
#: holds tasks only weakly).
_releasing: set[asyncio.Task[bool | None]] = set()


class Cache(Protocol):
    """What stampede protection needs of its cache besides its handle."""

    def get_backend_timeout(self, timeout: Any = ...) -> int: ...

    def set(self, key: Any, value: Any, timeout: Any = ..., version: int | None = ...) -> None: ...

    async def aset(
        self, key: Any, value: Any, timeout: Any = ..., version: int | None = ...
    ) -> None: ...

    def add(self, key: Any, value: Any, timeout: Any = ..., version: int | None = ...) -> bool: ...

    async def aadd(
        self, key: Any, value: Any, timeout: Any = ..., version: int | None = ...
    ) -> bool: ...


def early_recompute_window(
    cache: Cache, stampede: Stampede, early_recompute: int | None, timeout: Any
) -> int:
    """The early-recompute window of a protected ``get_or_set`` (0: off): the argument's, or
    the option's, at most the value's own timeout less a second. A window as long as the
    timeout would win a recompute at every read of a value just stored: caching would
    stop; capped, a value is served for at least a second before it is refreshed."""
    if early_recompute is None and not stampede.early_recompute:
        return 0  # off: the common case, decided before anything else is looked at
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
    exptime = cache.get_backend_timeout(timeout)
    if exptime == 0:
        return window  # never expires: memcached never reports it within a window
    if exptime < 0:
        return 0  # expired at once: nothing to refresh
    lifetime = exptime if exptime <= MAX_RELATIVE_EXPIRY else exptime - int(time.time())
    return max(min(window, lifetime - 1), 0)


class _Waiting:
    """What a caller does after a get-or-lease that gave it neither a value nor a win, the
    same for the blocking and the async driver: :meth:`after` says how long to pause before
    asking again, or ``None`` when it has waited long enough (``OPTIONS["stampede_wait"]``)
    and computes the value itself; :attr:`take` is what to ask with."""

    __slots__ = ("_give_up", "_pauses", "take")

    def __init__(self, seconds: float) -> None:
        self._give_up = time.monotonic() + seconds
        self._pauses = pauses()
        #: A value this caller cannot decode, to ask for the lease with at once.
        self.take: Undecodable | None = None

    def after(self, value: Any) -> float | None:
        """The pause before the next get-or-lease (0: at once), given what the last gave."""
        if value.__class__ is Undecodable:
            # A value found that cannot be decoded (a pickle of a class renamed since, a
            # corrupt or oversized compressed value) is a miss to this caller, not a value
            # someone else computes: it asks for the lease at once, without reading the key.
            self.take = value
            return 0.0
        # Another caller computes it: wait for its value, bounded.
        self.take = None
        if time.monotonic() >= self._give_up:
            return None
        return next(self._pauses)


def _joined(index: Undecodable, value: Any) -> Any:
    """What a get-or-lease that found a large value's ``index`` gives once the value is read
    whole (``value``, from a get): the value, or the index when the get missed."""
    return index if value is _MISSING else value


def _found(value: Any, won: bool) -> bool:
    """Whether a get-or-lease ends the asking: the lease or an early recompute won, or a
    value found that this caller can use."""
    return won or (value is not _MISSING and value.__class__ is not Undecodable)


def get_or_set(
    cache: Cache,
    handle: Handle,
    stampede: Stampede,
    key: Any,
    default: Any,
    timeout: Any,
    version: int | None,
    early_recompute: int | None,
) -> Any:
    """The backend's ``get_or_set`` with a callable ``default`` and protection on."""
    early = early_recompute_window(cache, stampede, early_recompute, timeout)
    # handle.key and handle.scope, written out: this is a hit's path.
    made = key if handle.key_func is None else handle.key(key, version)
    prefix, v = handle.prefix, handle.version if version is None else version
    lease, token, ask = stampede.lease, lease_token(), handle.calls.get_or_lease
    waiting: _Waiting | None = None
    take: Undecodable | None = None
    while True:
        value, won = ask(
            made, lease, early, _MISSING, prefix, v, token=token, undecodable=True, take=take
        )
        if value.__class__ is Undecodable and value.large:
            # A large value's index: its chunks are read by a get (a miss there, its chunks
            # gone, leaves it undecodable: the lease is asked for at once).
            value = _joined(value, handle.calls.get(made, _MISSING, prefix, v))
        if _found(value, won):
            break
        if waiting is None:
            waiting = _Waiting(stampede.wait)
        pause = waiting.after(value)
        if pause is None:
            break
        take = waiting.take
        if pause:
            handle.pause(pause)
    if not won and value is not _MISSING:
        return value
    # Won (the lease, or an early recompute), or waited long enough: compute it here.
    if not (won and value is _MISSING):
        value = default()
        cache.set(key, value, timeout, version)
        return value
    try:
        value = default()
        # A miss computed under the lease is stored with `add` (unless it replaces a value this
        # caller could not decode): a value set meanwhile is newer than this computation.
        if take is None:
            stored = cache.add(key, value, timeout, version)
        else:
            cache.set(key, value, timeout, version)
            stored = False
    except BaseException:
        # Failed: the next miss may be computed at once.
        _release_lease(handle, made, token, v)
        raise
    if _release_lease(handle, made, token, v) is False and stored:
        # The lease was ended while this caller computed: a delete of the key (which ends its
        # lease) came after the computation started, or the lease ran out. (A set meanwhile
        # needs no such end: the `add` above lost to it.) The value
        # may predate that delete: it must not stay (see "Stale sets" in the docs). Taken back
        # without ending the key's lease, which may be the next caller's by now.
        _discard(handle, made, v)
    return value


def _discard(handle: Handle, made: Any, version: int) -> None:
    """Deletes this caller's value, leaving the key's lease alone; a failure is logged (the
    replay of undelivered invalidations deletes it later), never raised."""
    try:
        handle.drive(handle.client.start_discard(made, handle.prefix, version))
    except CacheError as error:
        logger.warning("a stale computed value could not be deleted: %s", type(error).__name__)


async def _adiscard(handle: Handle, made: Any, version: int) -> None:
    """``_discard`` for async code."""
    try:
        await run(handle.client.start_discard(made, handle.prefix, version))
    except CacheError as error:
        logger.warning("a stale computed value could not be deleted: %s", type(error).__name__)


def _release_lease(handle: Handle, made: Any, token: bytes, version: int) -> bool | None:
    """Ends this caller's lease (its token only): whether it still held it (``None`` when
    the cache could not tell). A failure is logged, never raised: the value is computed and
    the lease runs out by itself, and an exception here would hide the computation's own."""
    try:
        return bool(
            handle.drive(handle.client.start_release_lease(made, token, handle.prefix, version))
        )
    except CacheError as error:
        logger.warning("a stampede lease could not be released: %s", type(error).__name__)
        return None


async def aget_or_set(
    cache: Cache,
    handle: Handle,
    stampede: Stampede,
    key: Any,
    default: Any,
    timeout: Any,
    version: int | None,
    early_recompute: int | None,
) -> Any:
    """``get_or_set`` for async code: the waits poll on the event loop, never blocking it.
    Cancelled, it ends the lease it may have won (in the background)."""
    early = early_recompute_window(cache, stampede, early_recompute, timeout)
    made, (prefix, v) = handle.key(key, version), handle.scope(version)
    lease, token, start = stampede.lease, lease_token(), handle.client.start_get_or_lease
    waiting: _Waiting | None = None
    take: Undecodable | None = None
    while True:
        operation = start(
            made, lease, early, _MISSING, prefix, v, token=token, undecodable=True, take=take
        )
        try:
            value, won = await run(operation)
        except asyncio.CancelledError:
            # The lease may be won on the server already, its answer never read: end it
            # (the token is this call's, so nobody else's lease is touched).
            _release_later(handle, made, token, v)
            raise
        if value.__class__ is Undecodable and value.large:
            value = _joined(value, await run(handle.client.start_get(made, _MISSING, prefix, v)))
        if _found(value, won):
            break
        if waiting is None:
            waiting = _Waiting(stampede.wait)
        pause = waiting.after(value)
        if pause is None:
            break
        take = waiting.take
        if pause:
            await asyncio.sleep(pause)
    if not won and value is not _MISSING:
        return value
    leased = won and value is _MISSING
    try:
        # Called as Django's own aget_or_set calls it: not awaited.
        value = default()
        if leased and take is None:
            # As `get_or_set`: a value set meanwhile is newer than this computation.
            stored = await cache.aadd(key, value, timeout, version)
        else:
            await cache.aset(key, value, timeout, version)
            stored = False
    except BaseException:
        if leased:
            # In the background: a cancelled task must not wait on the cache, and the
            # error is the caller's to see, not the release's.
            _release_later(handle, made, token, v)
        raise
    if leased and await _arelease_lease(handle, made, token, v) is False and stored:
        # The lease was ended while computing (see `get_or_set`).
        await _adiscard(handle, made, v)
    return value


async def _arelease_lease(handle: Handle, made: Any, token: bytes, version: int) -> bool | None:
    """``_release_lease`` for async code."""
    try:
        return bool(
            await run(handle.client.start_release_lease(made, token, handle.prefix, version))
        )
    except CacheError as error:
        logger.warning("a stampede lease could not be released: %s", type(error).__name__)
        return None


def _release_later(handle: Handle, made: Any, token: bytes, version: int) -> None:
    task = asyncio.ensure_future(_arelease_lease(handle, made, token, version))
    _releasing.add(task)
    task.add_done_callback(_releasing.discard)
