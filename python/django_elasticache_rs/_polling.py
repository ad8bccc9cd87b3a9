"""How a bounded wait polls: the pauses between polls while waiting for a lock, for a value
another caller computes, or (under gevent) for a pooled connection to come free."""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["FIRST_POLL", "LONGEST_POLL", "pauses"]

#: Short at first (what is waited for is often quick), doubling up to the longest, so that a
#: long wait costs few requests.
FIRST_POLL = 0.002
LONGEST_POLL = 0.05


def pauses() -> Iterator[float]:
    """The pauses between one wait's polls, in seconds (see ``FIRST_POLL``)."""
    pause = FIRST_POLL
    while True:
        yield pause
        pause = min(2 * pause, LONGEST_POLL)
