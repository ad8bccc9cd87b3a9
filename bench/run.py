"""The command line, and the run: clusters, Django, warm-up and calibration, the interleaved
repetitions, the memory check, the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, environment, greenlets, paired, plot, tls
from bench.backends import BACKENDS, caches_setting, discovered_nodes
from bench.measure import Series, estimate_per_op, iteration_counts
from bench.memory import MemoryFailure, MemoryResult, run_check
from bench.pinning import Pinning, default_enabled
from bench.reference import PROBES
from bench.report import Results, RunInfo, render
from bench.threads import WorkerPool
from bench.workloads import (
    WORKLOADS,
    BenchmarkError,
    Context,
    Prepared,
    Workload,
    install_request_finished,
)
from django_elasticache_rs.local import LocalCluster

THREADS = 8
REFERENCE = "reference"
MEMORY = "memory"
TLS = "tls"
GEVENT = "gevent"
PAIRED = "paired"


@dataclass(frozen=True)
class Timing:
    """How long measurements take."""

    target: float
    """Seconds per measurement at the geometric mean of the backends."""
    cap: float
    """At most this many seconds for the slowest backend."""
    estimate: float
    """Seconds of the calibration run."""
    floor: float
    """At least this many seconds per measurement for every backend."""


FULL = Timing(target=0.3, cap=0.8, estimate=0.05, floor=0.05)
QUICK = Timing(target=0.003, cap=0.01, estimate=0.002, floor=0.0005)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options."""
    names = [w.name for w in WORKLOADS] + [REFERENCE, MEMORY, TLS, GEVENT, PAIRED]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks our backend next to django-elastipymemcache, Django's "
        "PyMemcacheCache and PyLibMCCache on local clusters, interleaved, and writes a "
        "markdown report.",
    )
    parser.add_argument(
        "--repetitions", type=int, help="interleaved repetitions (default 5; 2 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="few iterations: a smoke test")
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join(names))
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO_ROOT / "bench-results" / "results.md",
        help="where the report goes (default bench-results/results.md)",
    )
    parser.add_argument(
        "--pin",
        choices=["auto", "on", "off"],
        default="auto",
        help="pin the single-threaded workloads' client and servers to one CPU "
        "(auto: when at most 4 CPUs)",
    )
    parser.add_argument("--cpu", type=int, help="the CPU to pin to (default: the last one)")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="our numbers from an earlier run (the .json written next to its report), for "
        "the target that blocking rows are no slower than before",
    )
    args = parser.parse_args(argv)
    if args.only:
        chosen = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(chosen) - set(names))
        if unknown:
            parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {names}")
        args.only = set(chosen)
    if args.repetitions is None:
        args.repetitions = 2 if args.quick else 5
    if args.repetitions < 1:
        parser.error("--repetitions must be at least 1")
    return args


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(message, file=sys.stderr, flush=True)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip()


class Bench:
    """One run over running clusters and a configured Django."""

    def __init__(
        self,
        clusters: dict[int, LocalCluster],
        workloads: list[Workload],
        probes: bool,
        pinning: Pinning,
        pool: WorkerPool,
        timing: Timing,
    ) -> None:
        self.clusters = clusters
        self.workloads = workloads
        self.probes = probes
        self.pinning = pinning
        self.context = Context(pool=pool)
        self.timing = timing
        self.results = Results()
        self.prepared: dict[str, dict[str, Prepared]] = {}
        self.broken: dict[str, str] = {}  # alias -> why it cannot be used

    def warm_up(self) -> None:
        """Opens every alias's connections and discovery; checks discovering backends see every
        node."""
        from django.core.cache import caches

        self.pinning.apply(True)
        for nodes in self.clusters:
            for backend in BACKENDS:
                alias = backend.alias(nodes)
                try:
                    cache = caches[alias]
                    cache.set("warmup", "x")
                    if cache.get("warmup") != "x":
                        raise BenchmarkError("get after set missed")
                    seen = discovered_nodes(backend, cache)
                    if seen is not None and seen != nodes:
                        raise BenchmarkError(f"discovered {seen} of {nodes} nodes")
                except Exception as exc:
                    self.broken[alias] = _error(exc)
                    progress(f"!! {alias}: {self.broken[alias]}")

    def calibrate(self, workload: Workload) -> None:
        """Prepares (stores data, checks) and warms the workload up on every backend, and sets
        one iteration count for all."""
        self.pinning.apply(workload.pinned)
        measured = self.results.series.setdefault(workload.name, {})

        def preparer(alias: str) -> Callable[[], Prepared]:
            def prepare() -> Prepared:
                if alias in self.broken:
                    raise BenchmarkError(self.broken[alias])
                return workload.prepare(alias, self.context)

            return prepare

        candidates = [
            (
                backend.name,
                measured.setdefault(backend.name, Series()),
                f"{workload.name} / {backend.name}",
                preparer(backend.alias(workload.nodes)),
            )
            for backend in BACKENDS
        ]
        multiple = THREADS if workload.name == "threads" else 1
        self.prepared[workload.name] = self._prepare_each(candidates, multiple)

    def calibrate_probes(self) -> None:
        """The same for the reference rows."""
        self.pinning.apply(True)
        candidates = [
            (
                probe.name,
                self.results.probes.setdefault(probe.name, Series()),
                f"reference {probe.name}",
                functools.partial(probe.prepare, self.clusters[probe.nodes]),
            )
            for probe in PROBES
        ]
        self.prepared[REFERENCE] = self._prepare_each(candidates)

    def _prepare_each(
        self,
        candidates: Sequence[tuple[str, Series, str, Callable[[], Prepared]]],
        multiple: int = 1,
    ) -> dict[str, Prepared]:
        """Prepares and warms up each candidate (name, its series, its label for errors, how to
        prepare it); those that are ready get one iteration count, a multiple of `multiple`."""
        ready: dict[str, Prepared] = {}
        estimated: list[tuple[Series, float]] = []
        for name, series, label, prepare in candidates:
            try:
                prepared = prepare()
                estimated.append((series, estimate_per_op(prepared.run, self.timing.estimate)))
            except Exception as exc:
                series.error = _error(exc)
                progress(f"!! {label}: {series.error}")
                continue
            ready[name] = prepared
        if estimated:
            timing = self.timing
            per_op = [op for _, op in estimated]
            counts = iteration_counts(per_op, timing.target, timing.cap, timing.floor, multiple)
            for (series, _), count in zip(estimated, counts, strict=True):
                series.iterations = count
        return ready

    def _measure(self, group: str, series: dict[str, Series], turn: int) -> str:
        ready = self.prepared[group]
        names = list(ready)
        if not names:
            return "nothing to measure"
        shift = turn % len(names)
        done = []
        for name in names[shift:] + names[:shift]:
            try:
                sample = ready[name].run(series[name].iterations)
            except Exception as exc:
                series[name].error = _error(exc)
                del ready[name]
                done.append(f"{name} error")
                continue
            series[name].samples.append(sample)
            done.append(f"{name} {sample.wall_us:,.1f}")
        return ", ".join(done)

    def repeat(self, repetitions: int) -> None:
        """The interleaved repetitions."""
        for rep in range(repetitions):
            for index, workload in enumerate(self.workloads):
                self.pinning.apply(workload.pinned)
                line = self._measure(workload.name, self.results.series[workload.name], rep + index)
                progress(f"[{rep + 1}/{repetitions}] {workload.name}: {line} µs")
            if self.probes:
                self.pinning.apply(True)
                line = self._measure(REFERENCE, self.results.probes, rep)
                progress(f"[{rep + 1}/{repetitions}] {REFERENCE}: {line} µs")

    def verify(self) -> None:
        """The checks again: nothing vanished, every backend still returns its values."""
        self.pinning.apply(True)
        groups: list[tuple[str, dict[str, Series]]] = [
            (w.name, self.results.series[w.name]) for w in self.workloads
        ]
        if self.probes:
            groups.append((REFERENCE, self.results.probes))
        for group, series in groups:
            for name, prepared in self.prepared[group].items():
                try:
                    prepared.verify()
                except Exception as exc:
                    series[name].error = f"check after the run failed: {_error(exc)}"
                    progress(f"!! {group} / {name}: {series[name].error}")


def _configure_django(clusters: dict[int, LocalCluster]) -> None:
    import django
    from django.conf import settings

    settings.configure(CACHES=caches_setting(clusters), USE_TZ=True)
    django.setup()
    install_request_finished()


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark; returns the exit status (0 unless it could not run)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    selected = args.only or {w.name for w in WORKLOADS} | {REFERENCE, MEMORY, TLS, GEVENT, PAIRED}
    workloads = [w for w in WORKLOADS if w.name in selected]
    timing = QUICK if args.quick else FULL
    enabled = default_enabled() if args.pin == "auto" else args.pin == "on"
    pinning = Pinning(enabled, args.cpu)
    other_load = environment.OtherLoad()
    started = time.monotonic()
    started_at = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    try:
        results = _run(args, selected, workloads, pinning, timing)
    except KeyboardInterrupt:
        progress("interrupted: clusters stopped")
        return 130
    if args.baseline is not None:
        results.baseline = read_baseline(args.baseline)
    info = RunInfo(
        command=environment.command_line(),
        started=started_at,
        seconds=time.monotonic() - started,
        repetitions=args.repetitions,
        quick=args.quick,
        pinning=pinning.describe(),
        machine=environment.machine(),
        versions=environment.versions(),
        revision=environment.git_revision(),
        native_build=environment.native_build(),
        other_load=other_load.describe(time.monotonic() - started),
    )
    report = render(results, info)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    # Every backend's numbers: for a later run's `--baseline` (ours) and for the plot.
    numbers = results_json(results, info)
    args.output.with_suffix(".json").write_text(json.dumps(numbers, indent=1))
    print(report)
    progress(f"report written to {args.output} ({info.seconds:,.0f} s)")
    if numbers["workloads"]:
        written = plot.plot(numbers, args.output.with_suffix(".png"))
        progress(f"plot written to {written}")
    return 0


def results_json(results: Results, info: RunInfo) -> dict[str, Any]:
    """What a run writes next to its report: ``ours`` (our wall µs per workload, what
    ``--baseline`` reads), and per workload every backend's wall and CPU µs (the plot's)."""
    workloads = []
    for workload in WORKLOADS:
        measured = {
            backend.name: series
            for backend in BACKENDS
            if (series := results.get(workload.name, backend.name)) is not None
        }
        if measured:
            workloads.append(
                {
                    "name": workload.name,
                    "title": workload.title,
                    "unit": workload.unit,
                    "asyncio": workload.asyncio,
                    "wall_us": {name: series.wall_us for name, series in measured.items()},
                    "cpu_us": {name: series.cpu_us for name, series in measured.items()},
                }
            )
    return {
        "command": info.command,
        "started": info.started,
        "ours": results.ours_wall_us(),
        "backends": {b.name: b.label.split(" (")[0].replace("`", "") for b in BACKENDS},
        "workloads": workloads,
    }


def read_baseline(path: Path) -> dict[str, float]:
    """Our wall µs per workload from an earlier run's ``.json`` (this format's ``ours``, or the
    whole file as runs before the plot wrote it)."""
    data = json.loads(path.read_text())
    ours: dict[str, float] = data["ours"] if "workloads" in data else data
    return ours


def _run(
    args: argparse.Namespace,
    selected: set[str],
    workloads: list[Workload],
    pinning: Pinning,
    timing: Timing,
) -> Results:
    results = Results()
    probes = REFERENCE in selected
    if workloads or probes or selected & {TLS, GEVENT, PAIRED}:
        with contextlib.ExitStack() as stack:
            sizes = (
                {3}
                | {w.nodes for w in workloads}
                | ({p.nodes for p in PROBES} if probes else set())
            )
            clusters = {n: stack.enter_context(LocalCluster(nodes=n)) for n in sorted(sizes)}
            for cluster in clusters.values():
                pinning.server_pids += [n.pid for n in cluster.nodes if n.pid is not None]
            progress(
                "clusters: "
                + "; ".join(f"{n} nodes at {c.configuration_endpoint}" for n, c in clusters.items())
            )
            _configure_django(clusters)
            pool = WorkerPool(THREADS)
            stack.callback(pool.close)
            bench = Bench(clusters, workloads, probes, pinning, pool, timing)
            bench.warm_up()
            for workload in workloads:
                bench.calibrate(workload)
                counts = {s.iterations for s in bench.results.series[workload.name].values()}
                progress(f"calibrated {workload.name}: {max(counts):,} ops per measurement")
            if probes:
                bench.calibrate_probes()
            bench.repeat(args.repetitions)
            bench.verify()
            results = bench.results
            if GEVENT in selected:
                progress("gevent: 50 greenlets, monkey-patched children (ours, pymemcache)")
                results.gevent = greenlets.measure(
                    clusters[3],
                    args.repetitions,
                    timing.target,
                    timing.cap,
                    timing.estimate,
                    timing.floor,
                    pinning,
                )
            if PAIRED in selected:
                progress("paired: issue 23's batch comparisons, back to back in rounds")
                results.paired = paired.measure(
                    clusters[3], bench.context, pinning, args.quick, timing.estimate, progress
                )
            if TLS in selected:
                progress("TLS next to plaintext (ours only)")
                results.tls = tls.measure(clusters[3], args.repetitions, timing.target, pinning)
            # While the clusters still run: our client's background discovery would log
            # failures to reach a stopped endpoint.
            if MEMORY in selected:
                results.memory = _memory_check(pinning)
    if MEMORY in selected and not results.memory:
        results.memory = _memory_check(pinning)
    return results


def _memory_check(pinning: Pinning) -> list[MemoryResult | MemoryFailure]:
    pinning.apply(False)
    progress("memory check: get_many of 1,000 x 100 KB, one subprocess per backend")
    return run_check()
