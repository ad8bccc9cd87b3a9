"""``cache.lock(key)``: a lock shared by every process using the cluster.

Held while its key holds this lock's token: taken with ``add`` (so one holder at a time),
released by deleting the key only while it still holds the token (so a holder whose lock
expired and was taken by another never releases the other's), and gone by itself after
``timeout`` seconds if its holder never releases it (a process that died).

The token is stored as raw bytes, whatever ``serde`` and compression the cache uses, and a
failure of the cache is always an error here, ``ignore_exc`` or not: a lock never answers
"held by someone else" when the cache could not be asked.
"""

from __future__ import annotations

import asyncio
import logging
import math
import numbers
import time
import uuid
from types import TracebackType
from typing import Any, Protocol

from django_elasticache_rs._futures import run
from django_elasticache_rs.exceptions import CacheError, LockNotAcquiredError
from django_elasticache_rs.handle import FIRST_POLL, LONGEST_POLL, Handle, pauses

__all__ = ["FIRST_POLL", "LONGEST_POLL", "Lock", "pauses"]

logger = logging.getLogger("django_elasticache_rs")


class Cache(Protocol):
    """What a lock needs of its cache: its handle and Django's expiry of a timeout."""

    @property
    def handle(self) -> Handle: ...

    def get_backend_timeout(self, timeout: Any = ...) -> int: ...


class Lock:
    """A lock on ``key``: ``with cache.lock("report"):`` or ``async with cache.lock(...)``.

    ``timeout``: seconds the lock lasts if never released, at least 1 (memcached counts whole
    seconds: a shorter timeout would store an item that has already expired, which the next
    ``add`` replaces, so two holders would both acquire); ``None`` never expires.
    ``blocking_timeout``: the longest ``acquire()`` waits for it (``None``: as long as it
    takes); entering the block raises ``LockNotAcquiredError`` once it is exceeded.

    A failure of the cache (a node down, a timeout) raises the cache's error from ``acquire``
    and ``release`` at once, whatever ``ignore_exc`` says; leaving a ``with`` block whose body
    raised, a failed release is logged and the body's exception goes on.
    """

    def __init__(
        self,
        cache: Cache,
        key: Any,
        timeout: Any,
        blocking_timeout: float | None,
        version: int | None,
    ) -> None:
        if blocking_timeout is not None and (
            isinstance(blocking_timeout, bool)
            or not isinstance(blocking_timeout, int | float)
            or not blocking_timeout >= 0
        ):
            raise ValueError(
                f"blocking_timeout must be None or seconds >= 0, not {blocking_timeout!r}"
            )
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, numbers.Real)
            or math.isnan(timeout)
            or timeout < 1
        ):
            raise ValueError(
                f"a lock's timeout must be None (never expires) or at least 1 second, not "
                f"{timeout!r}: memcached counts whole seconds, and a shorter lock would already "
                "have expired for the next caller"
            )
        self._cache = cache
        self._handle = cache.handle
        self._key = key
        self._timeout = timeout
        self._blocking_timeout = blocking_timeout
        self._version = version
        self._token = uuid.uuid4().hex.encode()
        self._held = False

    @property
    def held(self) -> bool:
        """Whether this object acquired the lock and has not released it (it may have expired
        since)."""
        return self._held

    def _give_up(self, blocking: bool) -> float:
        if not blocking:
            return 0.0
        if self._blocking_timeout is None:
            return float("inf")
        return time.monotonic() + self._blocking_timeout

    def acquire(self, blocking: bool = True) -> bool:
        """Takes the lock, waiting for it (polling) unless ``blocking`` is false; returns
        whether it was taken."""
        give_up, waits = self._give_up(blocking), pauses()
        while not self._handle.drive(self._acquire_operation()):
            if time.monotonic() >= give_up:
                return False
            self._handle.pause(next(waits))
        self._held = True
        return True

    def release(self) -> bool:
        """Releases the lock if this object still holds it; returns whether it did (``False``
        when it expired meanwhile, whoever holds it now). Raises the cache's error when the
        node could not be asked."""
        self._held = False
        released: bool = self._handle.drive(self._release_operation())
        return released

    def _acquire_operation(self) -> Any:
        handle, version = self._handle, self._version
        return handle.client.start_acquire(
            handle.key(self._key, version),
            self._token,
            self._cache.get_backend_timeout(self._timeout),
            *handle.scope(version),
        )

    def _release_operation(self) -> Any:
        handle, version = self._handle, self._version
        return handle.client.start_delete_if(
            handle.key(self._key, version), self._token, *handle.scope(version)
        )

    async def aacquire(self, blocking: bool = True) -> bool:
        """``acquire()`` for async code: the waits poll on the event loop."""
        give_up, waits = self._give_up(blocking), pauses()
        while not await run(self._acquire_operation()):
            if time.monotonic() >= give_up:
                return False
            await asyncio.sleep(next(waits))
        self._held = True
        return True

    async def arelease(self) -> bool:
        """``release()`` for async code."""
        self._held = False
        released: bool = await run(self._release_operation())
        return released

    def _not_acquired(self) -> LockNotAcquiredError:
        return LockNotAcquiredError(
            f"the lock {self._key!r} was not acquired within {self._blocking_timeout} s"
        )

    def __enter__(self) -> Lock:
        if not self.acquire():
            raise self._not_acquired()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.release()
        except CacheError as failure:
            if error is None:
                raise
            self._log_failed_release(failure)

    async def __aenter__(self) -> Lock:
        if not await self.aacquire():
            raise self._not_acquired()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.arelease()
        except CacheError as failure:
            if error is None:
                raise
            self._log_failed_release(failure)

    def _log_failed_release(self, failure: CacheError) -> None:
        # The body's exception is the one the caller must see; the lock expires by itself.
        # The key is left out: keys can carry personal data.
        logger.warning(
            "a lock could not be released (%s: %s); it expires after its timeout",
            type(failure).__name__,
            failure,
        )
