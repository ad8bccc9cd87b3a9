"""Freezing a memcached process for a test (SIGSTOP), as a node that stops answering does."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from django_elasticache_rs.local import LocalNode
from django_elasticache_rs.local.node import stop_process


def freeze(pid: int) -> None:
    """Stops the process and waits (bounded) until it is stopped (``LocalNode.freeze``'s way)."""
    stop_process(pid)


def thaw(pid: int) -> None:
    """Lets a frozen process go on."""
    os.kill(pid, signal.SIGCONT)


@contextmanager
def stopped(node: LocalNode) -> Iterator[None]:
    """The node stopped (its kernel still accepts connections and requests; nothing answers),
    and continued afterwards whatever happens."""
    pid = node.pid
    assert pid is not None
    freeze(pid)
    try:
        yield
    finally:
        thaw(pid)
