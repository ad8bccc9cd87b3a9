"""Issue 23's batch comparisons, paired: short shares of a row and of the row it is held to, taken
back to back in one process for many rounds (the order rotated from one round to the next); a
comparison is the median of the rounds' ratios, with its quartiles.

The results table's rows are measured seconds apart, and on a small shared machine the speed
of the same code drifts by tens of percent from one second to the next (one process's
``get_many`` read 46-77 µs of CPU in consecutive chunks of 1,500 calls): the ratio of two medians
carries that drift, and a 1.2x target flips from one run to the next. Two shares of 20 ms taken
one after the other see the same machine.

The asyncio comparisons run in this process: ``aget_many`` and the floor row (``get_many`` plus
one bare loop turn) against ``get_many``. The gevent one runs in a monkey-patched child
(``bench/greenlets_child.py --paired``): ``get_many`` against the same call blocking the hub.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.backends import OURS
from bench.greenlets import GREENLETS, child
from bench.measure import Runner, Sample, estimate_per_op
from bench.pinning import Pinning
from bench.reference import loop_turn_floor
from bench.workloads import Context, Prepared, aget_many, get_many
from django_elasticache_rs.local import LocalCluster

ROUNDS = 41
"""Rounds per comparison (``--quick``: fewer, see :func:`measure`)."""
SHARE = 0.02
"""Seconds of one share of a row in this process (``--quick``: 100x less)."""
GEVENT_SHARE = 0.05
"""Seconds of one share in the gevent child: longer, so that the 50 greenlets' start and end
weigh little (a few percent at 7 calls a greenlet)."""


@dataclass
class Comparison:
    """One row against the row it is held to, round by round."""

    name: str
    title: str
    reference: str
    greenlets: bool = False
    """Whether its shares are divided between the gevent child's greenlets."""
    measured: list[Sample] = field(default_factory=list)
    held_to: list[Sample] = field(default_factory=list)
    calls: tuple[int, int] = (0, 0)
    """Calls per share of each."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.measured) and bool(self.held_to)

    @property
    def ratios(self) -> list[float]:
        """Each round's wall-time ratio."""
        return [m.wall_us / h.wall_us for m, h in zip(self.measured, self.held_to, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of the rounds' ratios."""
        return statistics.median(self.ratios)

    @property
    def quartiles(self) -> tuple[float, float]:
        """The first and third quartiles of the rounds' ratios."""
        ratios = self.ratios
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        first, _, third = statistics.quantiles(ratios, n=4)
        return first, third


def _calls(run: Runner, share: float, estimate: float) -> int:
    """How many calls of ``run`` make a share of ``share`` seconds."""
    return max(1, math.ceil(share / estimate_per_op(run, estimate)))


def _rounds(runs: dict[str, tuple[Runner, int]], rounds: int) -> dict[str, list[Sample]]:
    """``rounds`` rounds of one share of each of ``runs`` (name -> runner, calls), the order
    rotated by one from each round to the next."""
    names = list(runs)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for turn in range(rounds):
        shift = turn % len(names)
        for name in names[shift:] + names[:shift]:
            run, calls = runs[name]
            samples[name].append(run(calls))
    return samples


def measure(
    cluster: LocalCluster,
    context: Context,
    pinning: Pinning,
    quick: bool,
    estimate: float,
    progress: Callable[[str], None],
) -> list[Comparison]:
    """The three comparisons, pinned like the single-threaded workloads."""
    rounds, share, gevent_share = ROUNDS, SHARE, GEVENT_SHARE
    if quick:
        rounds, share, gevent_share = 5, SHARE / 100, GEVENT_SHARE / 100
    pinning.apply(True)
    alias = OURS.alias(len(cluster.addresses))
    aget = Comparison("aget_many", "`aget_many`, 100 keys", "`get_many`")
    floor = Comparison(
        "loop_turn_floor",
        "`get_many` + one bare loop turn (the floor of an awaited call)",
        "`get_many`",
    )
    green = Comparison(
        "gevent get_many",
        "gevent `get_many`, 100 keys (50 greenlets)",
        "the same child's `get_many` blocking the hub",
        greenlets=True,
    )
    try:
        prepared: dict[str, Prepared] = {
            "get_many": get_many(alias, context),
            "aget_many": aget_many(alias, context),
            "loop_turn_floor": loop_turn_floor(cluster),
        }
        runs = {name: (p.run, _calls(p.run, share, estimate)) for name, p in prepared.items()}
        progress(
            "paired: "
            + ", ".join(f"{name} {calls:,} calls" for name, (_, calls) in runs.items())
            + f" per share, {rounds} rounds"
        )
        samples = _rounds(runs, rounds)
        for p in prepared.values():
            p.verify()
    except Exception as exc:
        aget.error = floor.error = f"{type(exc).__name__}: {exc}"
    else:
        for comparison in (aget, floor):
            comparison.measured = samples[comparison.name]
            comparison.held_to = samples["get_many"]
            comparison.calls = (runs[comparison.name][1], runs["get_many"][1])
    try:
        found = child(
            OURS, cluster, "--paired", json.dumps({"rounds": rounds, "share": gevent_share})
        )
    except Exception as exc:
        green.error = str(exc)
    else:
        measured, held_to = found["get_many"], found["get_many_blocking"]
        assert isinstance(measured, list) and isinstance(held_to, list)
        green.measured = [_sample(s) for s in measured]
        green.held_to = [_sample(s) for s in held_to]
        green.calls = (green.measured[0].ops, green.held_to[0].ops)
    return [aget, floor, green]


def _sample(found: dict[str, float]) -> Sample:
    return Sample(found["wall"], found["cpu"], int(found["ops"]))


def table(comparisons: list[Comparison]) -> list[str]:
    """The paired section's markdown table."""
    lines = [
        "| row | held to | calls per share | µs, medians | median of the rounds' ratios "
        "| quartiles | rounds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in comparisons:
        if not c.ok:
            lines.append(f"| {c.title} | {c.reference} | — | — | {c.error or '—'} | — | — |")
            continue
        first, third = c.quartiles
        measured = statistics.median(s.wall_us for s in c.measured)
        held_to = statistics.median(s.wall_us for s in c.held_to)
        calls = f"{c.calls[0]:,}, {c.calls[1]:,}"
        if c.greenlets:
            calls += f" ({c.calls[0] // GREENLETS:,} and {c.calls[1] // GREENLETS:,} a greenlet)"
        lines.append(
            f"| {c.title} | {c.reference} | {calls} | {measured:.1f} vs {held_to:.1f} "
            f"| {c.ratio:.3f}x | {first:.3f}-{third:.3f} | {len(c.ratios)} |"
        )
    return lines


def errors(comparisons: list[Comparison]) -> list[str]:
    """What failed, for the report."""
    return [f"paired {c.name}: {c.error}" for c in comparisons if c.error]
