"""Timing: wall time (``time.perf_counter``) and the client process's CPU time
(``time.process_time``: every thread of this process; the memcached servers are other processes
and are not counted), per operation; calibration of iteration counts; medians.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One measurement: ``ops`` operations took ``wall`` seconds and ``cpu`` seconds of CPU."""

    wall: float
    cpu: float
    ops: int

    @property
    def wall_us(self) -> float:
        """Wall microseconds per operation."""
        return self.wall / self.ops * 1e6

    @property
    def cpu_us(self) -> float:
        """Client CPU microseconds per operation."""
        return self.cpu / self.ops * 1e6


Runner = Callable[[int], Sample]
"""Runs a workload ``n`` times on one backend and returns how long that took."""


def loop_runner(body: Callable[[int], object]) -> Runner:
    """A :data:`Runner` around ``body(n)``, which does ``n`` operations in the calling thread."""

    def run(n: int) -> Sample:
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        body(n)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        return Sample(wall1 - wall0, cpu1 - cpu0, n)

    return run


def async_runner(body: Callable[[int], Awaitable[object]]) -> Runner:
    """A :data:`Runner` around ``await body(n)``, in an event loop of its own (one
    ``asyncio.run`` per measurement), timed inside the loop: starting and closing a loop is no
    operation's cost (a server's loop lives as long as the server), and it would weigh on each
    operation as much as the count is small (a few dozen when the alternatives are slow)."""

    async def timed(n: int) -> Sample:
        gc.collect()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await body(n)
        wall1, cpu1 = time.perf_counter(), time.process_time()
        return Sample(wall1 - wall0, cpu1 - cpu0, n)

    def run(n: int) -> Sample:
        return asyncio.run(timed(n))

    return run


def estimate_per_op(run: Runner, min_time: float) -> float:
    """Warms ``run`` up, then runs it with growing counts until one run takes ``min_time``;
    returns the seconds per operation of that run."""
    run(1)
    n = 1
    while True:
        sample = run(n)
        if sample.wall >= min_time:
            return sample.wall / sample.ops
        grow = min_time / max(sample.wall, 1e-6) * 1.2
        n = max(n * 2, math.ceil(n * grow))


def choose_iterations(per_op: list[float], target: float, cap: float) -> int:
    """One iteration count for every backend of a workload: ``target`` seconds at the geometric
    mean of their per-operation times, but at most ``cap`` seconds for the slowest."""
    mean = statistics.geometric_mean(per_op)
    n = min(target / mean, cap / max(per_op))
    return max(1, round(n))


def iteration_counts(
    per_op: list[float], target: float, cap: float, floor: float, multiple: int = 1
) -> list[int]:
    """Each backend's iteration count for one workload (``per_op``: their seconds per
    operation, in order): the count :func:`choose_iterations` gives all, a multiple of
    ``multiple``, but more for a backend it would give less than ``floor`` seconds: a sample
    of a few milliseconds (a fast backend's, when the others are a hundred times slower) is at
    the mercy of one scheduler hiccup."""
    n = choose_iterations(per_op, target, cap)
    counts = []
    for op in per_op:
        more = max(n, math.ceil(floor / max(op, 1e-9)))
        counts.append(max(multiple, more - more % multiple))
    return counts


def median(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def spread(values: list[float]) -> float:
    """(max - min) / median: how much the repetitions disagree."""
    middle = statistics.median(values)
    return (max(values) - min(values)) / middle if middle else 0.0


class Series:
    """The samples of one workload on one backend, across repetitions, or why there are
    none."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.error: str | None = None
        self.iterations = 0

    @property
    def ok(self) -> bool:
        """Measured, without error."""
        return self.error is None and bool(self.samples)

    @property
    def wall_us(self) -> float:
        """Median wall microseconds per operation."""
        return median([s.wall_us for s in self.samples])

    @property
    def cpu_us(self) -> float:
        """Median client CPU microseconds per operation."""
        return median([s.cpu_us for s in self.samples])

    @property
    def spread(self) -> float:
        """How much the repetitions' wall times disagree, relative to their median."""
        return spread([s.wall_us for s in self.samples])
