"""The gevent rows: ``get`` and ``get_many`` of 100 keys, each run by 50 greenlets at once in a
monkey-patched process (as under gunicorn's gevent worker), for our backend and for Django's
``PyMemcacheCache`` (pure-Python pymemcache, which yields to gevent's hub by its patched
sockets).

Monkey-patching must happen at a process's start and must not reach the benchmark itself, so
each measurement is a child process (``bench/greenlets_child.py``) that warms up, then times
the workloads (ours also ``get_many`` blocking the hub, the same-process reference), on greenlets
it starts once and keeps. One
iteration count per workload for both backends, calibrated from a child of each (more for a
backend it would give samples shorter than the benchmark's floor); the backends take turns in
each repetition, in rotated order; medians are reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench import REPO_ROOT
from bench.backends import OURS, PYMEMCACHE, Backend
from bench.measure import Sample, Series, iteration_counts
from bench.pinning import Pinning
from django_elasticache_rs.local import LocalCluster

CHILD = REPO_ROOT / "bench" / "greenlets_child.py"
GREENLETS = 50
BACKENDS: tuple[Backend, ...] = (OURS, PYMEMCACHE)
WORKLOADS = {
    "get": "get, hit (100 B str)",
    "get_many": "get_many, 100 keys (per call)",
    "get_many_blocking": "get_many, 100 keys, blocking the hub (`gevent: False`, per call)",
}


@dataclass
class GeventRow:
    """One workload under gevent: a series per backend."""

    workload: str
    series: dict[str, Series]


def child(backend: Backend, cluster: LocalCluster, *mode: str) -> dict[str, object]:
    """Runs ``bench/greenlets_child.py`` for ``backend`` on ``cluster`` in ``mode`` (its
    arguments); its JSON line."""
    command = [
        sys.executable,
        str(CHILD),
        "--backend",
        backend.name,
        "--location",
        json.dumps(backend.location(cluster)),
        *mode,
    ]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{backend.name} under gevent: {tail}")
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def measure(
    cluster: LocalCluster,
    repetitions: int,
    target: float,
    cap: float,
    estimate: float,
    floor: float,
    pinning: Pinning,
) -> list[GeventRow]:
    """Every workload for both backends, ``repetitions`` times, pinned like the single-threaded
    workloads (the children inherit the benchmark's CPU)."""
    pinning.apply(True)
    series = {w: {b.name: Series() for b in BACKENDS} for w in WORKLOADS}
    per_op: dict[str, dict[str, float]] = {w: {} for w in WORKLOADS}
    ready: list[Backend] = []
    for backend in BACKENDS:
        try:
            estimated = child(backend, cluster, "--estimate", str(estimate))
        except Exception as exc:
            for workload in WORKLOADS:
                series[workload][backend.name].error = str(exc)
            continue
        ready.append(backend)
        # What its child runs (``get_many_blocking``: ours only, the same-process reference).
        for workload, seconds in estimated.items():
            per_op[workload][backend.name] = float(seconds)  # type: ignore[arg-type]
    if not ready:
        return [GeventRow(w, series[w]) for w in WORKLOADS]
    # One count per workload, more for a backend whose samples it would make too short.
    iterations: dict[str, dict[str, int]] = {b.name: {} for b in ready}
    for workload, estimates in per_op.items():
        if not estimates:
            continue
        each = iteration_counts(list(estimates.values()), target, cap, floor, GREENLETS)
        for name, count in zip(estimates, each, strict=True):
            iterations[name][workload] = count
    for rep in range(repetitions):
        shift = rep % len(ready)
        for backend in ready[shift:] + ready[:shift]:
            counts = iterations[backend.name]
            try:
                samples = child(backend, cluster, "--iterations", json.dumps(counts))
            except Exception as exc:
                for workload in WORKLOADS:
                    series[workload][backend.name].error = str(exc)
                continue
            for workload in counts:
                measured = samples[workload]
                assert isinstance(measured, dict)
                s = series[workload][backend.name]
                s.samples.append(Sample(measured["wall"], measured["cpu"], int(measured["ops"])))
                s.iterations = counts[workload]
    return [GeventRow(w, series[w]) for w in WORKLOADS]


def ours(rows: list[GeventRow], workload: str) -> Series | None:
    """Our series of ``workload``, if measured."""
    for row in rows:
        found = row.series.get(OURS.name)
        if row.workload == workload and found is not None and found.ok:
            return found
    return None


def table(rows: list[GeventRow]) -> list[str]:
    """The gevent section's markdown table."""
    header = ["workload (50 greenlets)"]
    for backend in BACKENDS:
        header += [f"{backend.name} µs", f"{backend.name} CPU µs"]
    header += ["ours vs pymemcache", "ops/measurement"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for row in rows:
        cells = [WORKLOADS[row.workload]]
        for backend in BACKENDS:
            s = row.series[backend.name]
            if s.ok:
                cells += [f"{s.wall_us:.1f}", f"{s.cpu_us:.1f}"]
            else:
                cells += ["error", ""] if s.error else ["—", ""]
        ours, theirs = row.series[OURS.name], row.series[PYMEMCACHE.name]
        ratio = f"{theirs.wall_us / ours.wall_us:.2f}x" if ours.ok and theirs.ok else "—"
        iterations = {s.iterations for s in row.series.values() if s.iterations}
        cells += [ratio, ", ".join(f"{n:,}" for n in sorted(iterations)) or "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def errors(rows: list[GeventRow]) -> list[str]:
    """What failed, for the report."""
    return [
        f"gevent {row.workload} / {name}: {s.error}"
        for row in rows
        for name, s in row.series.items()
        if s.error
    ]
