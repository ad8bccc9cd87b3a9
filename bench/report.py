"""The markdown report: the results table, the reference rows, the targets of issues 5, 13 and
23 with PASS/FAIL from this run's numbers (informational: the benchmark never fails on them),
the memory check and how the run was made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bench import greenlets, paired
from bench.backends import ALTERNATIVES, BACKENDS, ELASTIPYMEMCACHE, OURS, PYLIBMC
from bench.measure import Series
from bench.memory import PAYLOAD, MemoryFailure, MemoryResult
from bench.reference import PROBES
from bench.tls import TlsRow
from bench.tls import table as tls_table
from bench.workloads import WORKLOADS

MEMORY_LIMIT = 2.0
"""The memory target: peak RSS growth at most this many times the payload."""
ASYNC_LIMIT = 1.3
"""Issue 13: an async row at most this many times the row it is held to (ours, wall time)."""
BATCH_LIMIT = 1.2
"""Issue 23: the asyncio and gevent get_many of 100 keys at most this many times the blocking
one (ours, wall time)."""
C_CLIENT_LIMIT = 2.2
"""Issue 23: our get_many of 100 keys at most this many times a C client's 100-key get on one
node (pylibmc's get_multi)."""
BASELINE_NOISE = 0.05
"""Issue 13: a blocking row of ours is "no slower" than in the baseline run within this much."""


@dataclass
class Results:
    """Everything one run measured."""

    series: dict[str, dict[str, Series]] = field(default_factory=dict)
    """workload name -> backend name -> series."""
    probes: dict[str, Series] = field(default_factory=dict)
    memory: list[MemoryResult | MemoryFailure] = field(default_factory=list)
    tls: list[TlsRow] = field(default_factory=list)
    gevent: list[greenlets.GeventRow] = field(default_factory=list)
    paired: list[paired.Comparison] = field(default_factory=list)
    baseline: dict[str, float] | None = None
    """Our wall µs per workload in an earlier run (``--baseline``), for the no-regression
    target."""

    def ours_wall_us(self) -> dict[str, float]:
        """Our wall µs per measured workload (what ``--baseline`` reads back)."""
        return {
            name: series.wall_us
            for name, by_backend in self.series.items()
            if (series := by_backend.get(OURS.name)) is not None and series.ok
        }

    def get(self, workload: str, backend: str) -> Series | None:
        """A measured series, or ``None``."""
        found = self.series.get(workload, {}).get(backend)
        return found if found is not None and found.ok else None

    def ratio(self, workload: str, alternative: str) -> float | None:
        """``alternative``'s wall time / ours: above 1, ours is faster."""
        ours, theirs = self.get(workload, OURS.name), self.get(workload, alternative)
        if ours is None or theirs is None:
            return None
        return theirs.wall_us / ours.wall_us


@dataclass(frozen=True)
class RunInfo:
    """How the run was made."""

    command: str
    started: str
    seconds: float
    repetitions: int
    quick: bool
    pinning: str
    machine: dict[str, str]
    versions: dict[str, str]
    revision: str
    native_build: str
    other_load: str


def us(value: float) -> str:
    """Microseconds, with precision that suits their size."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def times(ratio: float | None) -> str:
    """A ratio as ``2.41x``."""
    return "—" if ratio is None else f"{ratio:.2f}x"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def results_table(results: Results) -> list[str]:
    """Rows: workloads; columns: each backend's wall and CPU µs, then ours vs each other."""
    header = ["workload"]
    for backend in BACKENDS:
        header += [f"{backend.name} µs", f"{backend.name} CPU µs"]
    header += [f"ours vs {alt.name}" for alt in ALTERNATIVES]
    header.append("ops/measurement")
    lines = [_row(header), _row(["---"] + ["---:"] * (len(header) - 1))]
    for workload in WORKLOADS:
        measured = results.series.get(workload.name)
        if measured is None:
            continue
        per = "" if workload.unit == "op" else f" (per {workload.unit})"
        cells = [workload.title + per]
        for backend in BACKENDS:
            series = measured.get(backend.name)
            if series is None or not series.ok:
                cells += ["error" if series is not None and series.error else "—", ""]
            else:
                cells += [us(series.wall_us), us(series.cpu_us)]
        cells += [times(results.ratio(workload.name, alt.name)) for alt in ALTERNATIVES]
        iterations = {s.iterations for s in measured.values() if s.iterations}
        cells.append(", ".join(f"{n:,}" for n in sorted(iterations)) or "—")
        lines.append(_row(cells))
    return lines


def reference_table(results: Results) -> list[str]:
    """The reference rows, each next to the cell of the table it explains."""
    titles = {w.name: w.title for w in WORKLOADS}
    lines = [_row(["reference", "µs", "CPU µs", "compare with", "µs", "CPU µs"])]
    lines.append(_row(["---", "---:", "---:", "---", "---:", "---:"]))
    for probe in PROBES:
        series = results.probes.get(probe.name)
        if series is None:
            continue
        cells = [probe.title]
        cells += [us(series.wall_us), us(series.cpu_us)] if series.ok else ["error", ""]
        other = results.get(*probe.compare) if probe.compare else None
        if probe.compare and other is not None:
            workload, backend = probe.compare
            cells += [f"{backend}: {titles[workload]}", us(other.wall_us), us(other.cpu_us)]
        else:
            cells += ["", "", ""]
        lines.append(_row(cells))
    return lines


# -- targets ---------------------------------------------------------------------------------

Verdict = tuple[str, bool | None]
"""What was measured, and whether it meets the target (``None``: not measured)."""


@dataclass(frozen=True)
class Target:
    """One target of issue 5 or 13."""

    text: str
    check: Callable[[Results], Verdict]


def _faster(workload: str, alternative: str, minimum: float) -> Callable[[Results], Verdict]:
    def check(results: Results) -> Verdict:
        ratio = results.ratio(workload, alternative)
        if ratio is None:
            return "not measured", None
        return times(ratio), ratio >= minimum

    return check


def _cpu_per_get(results: Results) -> Verdict:
    ours = results.get("get_hit", OURS.name)
    if ours is None:
        return "not measured", None
    return f"{us(ours.cpu_us)} µs", ours.cpu_us <= 10.0


def _nodes(results: Results) -> Verdict:
    """The same get of one key at 10 nodes and at 3: what the node count costs the client
    (routing hashes every node). The keys-in-turn rows are shown alongside: there the servers
    also take turns on the one CPU, which slows raw sockets as much."""
    three, ten = results.get("get_hit", OURS.name), results.get("get_hit_10_nodes", OURS.name)
    if three is None or ten is None:
        return "not measured", None
    change = ten.wall_us / three.wall_us - 1
    measured = f"one key: {us(ten.wall_us)} vs {us(three.wall_us)} µs ({change:+.1%})"
    spread3 = results.get("get_3_nodes", OURS.name)
    spread10 = results.get("get_10_nodes", OURS.name)
    if spread3 is not None and spread10 is not None:
        measured += f"; 100 keys in turn: {spread10.wall_us / spread3.wall_us - 1:+.1%}"
        raw3, raw10 = results.probes.get("raw_3_nodes"), results.probes.get("raw_10_nodes")
        if raw3 is not None and raw10 is not None and raw3.ok and raw10.ok:
            measured += f", raw sockets {raw10.wall_us / raw3.wall_us - 1:+.1%}"
    return measured, change <= 0.05


Select = Callable[[Results], Series | None]
"""Which of a run's measured series a target reads (``None``: not measured)."""


def _ours(workload: str) -> Select:
    """Our row ``workload`` of the results table."""
    return lambda results: results.get(workload, OURS.name)


def _gevent(workload: str) -> Select:
    """Our row ``workload`` of the gevent table."""
    return lambda results: greenlets.ours(results.gevent, workload)


def _probe(name: str) -> Select:
    """The reference row ``name``."""

    def select(results: Results) -> Series | None:
        found = results.probes.get(name)
        return found if found is not None and found.ok else None

    return select


def _within(measured: Select, reference: Select, limit: float) -> Callable[[Results], Verdict]:
    """``measured`` at most ``limit`` times ``reference`` (wall time)."""

    def check(results: Results) -> Verdict:
        ours, held_to = measured(results), reference(results)
        if ours is None or held_to is None:
            return "not measured", None
        ratio = ours.wall_us / held_to.wall_us
        return f"{us(ours.wall_us)} vs {us(held_to.wall_us)} µs = {ratio:.2f}x", ratio <= limit

    return check


def _paired(name: str, limit: float) -> Callable[[Results], Verdict]:
    """The paired comparison ``name`` at most ``limit``: the median of its rounds' ratios."""

    def check(results: Results) -> Verdict:
        found = next((c for c in results.paired if c.name == name and c.ok), None)
        if found is None:
            return "not measured", None
        first, third = found.quartiles
        return (
            f"{found.ratio:.2f}x (quartiles {first:.2f}-{third:.2f}, {len(found.ratios)} rounds)",
            found.ratio <= limit,
        )

    return check


def _no_slower_than_baseline(results: Results) -> Verdict:
    """Every blocking row of ours against the same row of the baseline run."""
    if results.baseline is None:
        return "no baseline (`--baseline FILE`)", None
    compared, slower = 0, []
    for workload in WORKLOADS:
        ours, before = results.get(workload.name, OURS.name), results.baseline.get(workload.name)
        if workload.asyncio or ours is None or before is None:
            continue
        compared += 1
        change = ours.wall_us / before - 1
        if change > BASELINE_NOISE:
            slower.append(f"{workload.name} {change:+.1%}")
    if not compared:
        return "no row measured in both runs", None
    if slower:
        return f"slower: {', '.join(slower)}", False
    return f"{compared} rows within {BASELINE_NOISE:.0%}", True


def _memory(results: Results) -> Verdict:
    ours = next(
        (r for r in results.memory if isinstance(r, MemoryResult) and r.backend == OURS.name),
        None,
    )
    if ours is None:
        return "not measured", None
    return f"peak +{ours.peak_growth / 1e6:.0f} MB = {ours.ratio:.2f}x payload", (
        ours.ratio <= MEMORY_LIMIT
    )


E, L = ELASTIPYMEMCACHE.name, PYLIBMC.name
TARGETS: tuple[Target, ...] = (
    Target("get hit ≥ 2.2x django-elastipymemcache", _faster("get_hit", E, 2.2)),
    Target("get hit ≥ 1.05x pylibmc", _faster("get_hit", L, 1.05)),
    Target("get_many(100) ≥ 25x django-elastipymemcache", _faster("get_many", E, 25)),
    Target("get_many(100) ≥ 3.5x pylibmc", _faster("get_many", L, 3.5)),
    Target("set_many(100) ≥ 15x django-elastipymemcache", _faster("set_many", E, 15)),
    Target("request cycle ≥ 4x django-elastipymemcache", _faster("request_cycle", E, 4)),
    Target("8 threads ≥ 3x django-elastipymemcache", _faster("threads", E, 3)),
    Target("aget ≥ 3x django-elastipymemcache", _faster("aget", E, 3)),
    Target("client CPU per get ≤ 10 µs", _cpu_per_get),
    Target("get at 10 nodes within 5% of get at 3 nodes (one key)", _nodes),
    Target(
        f"aget_many(100) within {ASYNC_LIMIT:g}x of get_many(100) (issue 13)",
        _within(_ours("aget_many"), _ours("get_many"), ASYNC_LIMIT),
    ),
    Target(
        f"aset within {ASYNC_LIMIT:g}x of aget (issue 13)",
        _within(_ours("aset"), _ours("aget"), ASYNC_LIMIT),
    ),
    Target(
        f"aincr within {ASYNC_LIMIT:g}x of aget (issue 13)",
        _within(_ours("aincr"), _ours("aget"), ASYNC_LIMIT),
    ),
    Target(
        f"adelete within {ASYNC_LIMIT:g}x of aget (issue 13)",
        _within(_ours("adelete"), _ours("aget"), ASYNC_LIMIT),
    ),
    Target(
        f"aget_many(100) within {BATCH_LIMIT:g}x of get_many(100) (issue 23)",
        _within(_ours("aget_many"), _ours("get_many"), BATCH_LIMIT),
    ),
    Target(
        f"gevent get_many(100) within {BATCH_LIMIT:g}x of get_many(100) (issue 23)",
        _within(_gevent("get_many"), _ours("get_many"), BATCH_LIMIT),
    ),
    Target(
        f"gevent get_many(100) within {BATCH_LIMIT:g}x of get_many(100) blocking the hub, "
        "in the same child process (issue 23, the same comparison without two processes)",
        _within(_gevent("get_many"), _gevent("get_many_blocking"), BATCH_LIMIT),
    ),
    Target(
        f"aget_many(100) within {BATCH_LIMIT:g}x of get_many(100), paired: back to back in "
        "rounds in one process (issue 23)",
        _paired("aget_many", BATCH_LIMIT),
    ),
    Target(
        f"gevent get_many(100) within {BATCH_LIMIT:g}x of get_many(100) blocking the hub, "
        "paired: back to back in rounds in one child (issue 23)",
        _paired("gevent get_many", BATCH_LIMIT),
    ),
    Target(
        f"get_many(100) within {C_CLIENT_LIMIT:g}x of pylibmc's get_multi(100) on one node "
        "(issue 23)",
        _within(_ours("get_many"), _probe("pylibmc_get_multi"), C_CLIENT_LIMIT),
    ),
    Target(
        f"blocking rows no slower than the baseline run, within {BASELINE_NOISE:.0%} (issue 13)",
        _no_slower_than_baseline,
    ),
    Target(
        f"get_many of 1,000 x 100 KB: peak RSS growth ≤ {MEMORY_LIMIT:g}x payload "
        "(at most one copy of the values alive besides the result)",
        _memory,
    ),
)


def targets_table(results: Results) -> list[str]:
    """Each target with this run's number and PASS/FAIL."""
    lines = [_row(["target (ours vs …, wall time)", "measured", "result"]), "| --- | ---: | --- |"]
    for target in TARGETS:
        measured, met = target.check(results)
        verdict = "—" if met is None else ("PASS" if met else "FAIL")
        lines.append(_row([target.text, measured, verdict]))
    return lines


# -- memory ----------------------------------------------------------------------------------


def memory_table(results: Results) -> list[str]:
    """The memory check per backend."""
    lines = [
        _row(["backend", "RSS before", "peak RSS", "peak growth", "growth ÷ payload", "time"]),
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results.memory:
        if isinstance(result, MemoryFailure):
            lines.append(_row([result.backend, f"error: {result.error}", "", "", "", ""]))
            continue
        mb = [f"{v / 1e6:,.0f} MB" for v in (result.rss_before, result.peak, result.peak_growth)]
        lines.append(
            _row([result.backend, *mb, f"{result.ratio:.2f}x", f"{result.seconds * 1e3:,.0f} ms"])
        )
    return lines


# -- the whole report ------------------------------------------------------------------------


def render(results: Results, info: RunInfo) -> str:
    """The report, in markdown."""
    out = ["# Benchmark: django-elasticache-rs and the alternatives", ""]
    out.append(f"`{info.command}` — {info.started}, took {info.seconds:,.0f} s.")
    if info.quick:
        out += ["", "**Quick run** (`--quick`): few iterations, a smoke test; not for numbers."]
    out += [
        "",
        f"Microseconds per operation, median of {info.repetitions} interleaved repetitions: wall "
        "time, then the CPU time of the client process (all its threads; the memcached servers "
        "are other processes and are not counted). **ours vs X** is X's wall time ÷ ours: above "
        "1 we are faster.",
        "",
        *results_table(results),
    ]
    if results.probes:
        out += ["", "## Reference", "", *reference_table(results)]
    out += [
        "",
        "## Targets (issues 5, 13 and 23)",
        "",
        "Informational, from this run's medians; the benchmark never fails on them.",
        "",
        *targets_table(results),
    ]
    if results.memory:
        out += [
            "",
            "## Memory: `get_many` of 1,000 keys x 100 KB",
            "",
            f"Payload 1,000 x 100 KiB = {PAYLOAD / 1e6:.0f} MB; each backend in a subprocess of "
            "its own, peak RSS reset after warm-up (`/proc/self/clear_refs`), `VmRSS` before, "
            "`VmHWM` after. "
            "Growth near 1x: values read straight into their Python objects; near 2x: one more "
            "copy of every value alive at the peak. RSS cannot see copies freed as soon as made.",
            "",
            *memory_table(results),
        ]
    if results.tls:
        out += [
            "",
            "## TLS next to plaintext (ours)",
            "",
            "A 3-node cluster served over TLS (memcached `-Z`, the configuration endpoint too; "
            "certificates verified against the nodes' hostname) next to the plaintext one, "
            "interleaved, pinned like the single-threaded workloads. Over TLS a batch is sent "
            "in exchanges of one TLS record (16 KB): memcached 1.6 stalls on longer TLS "
            "pipelines.",
            "",
            *tls_table(results.tls),
        ]
    if results.gevent:
        out += [
            "",
            "## gevent: 50 greenlets, monkey-patched (ours and pymemcache)",
            "",
            "Each backend in a monkey-patched child process of its own (`gevent.monkey."
            "patch_all()` first thing, as gunicorn's gevent worker does), 50 greenlets sharing "
            "the operations, handed out together; µs per op = wall time ÷ all greenlets' ops. "
            "The greenlets are started once per child and kept: spawning and joining them in "
            "each measurement would be timed too. "
            "Pinned like the single-threaded workloads; the backends take turns, one child "
            "per measurement, after a warm-up of at least 0.25 s per workload in it. The "
            'blocking row is our `get_many` with `OPTIONS["gevent"] = False` in the same '
            "child: each call blocks the hub, so the greenlets' calls run one after another, "
            "the same-process reference the gevent row is held to.",
            "",
            *greenlets.table(results.gevent),
        ]
    if results.paired:
        out += [
            "",
            "## Issue 23's batch comparisons, paired",
            "",
            "Shares of about 20 ms of a row and of the row it is held to (50 ms in the gevent "
            "child), taken back to back, the order rotated each round; the ratio is the median "
            "of the rounds' ratios of wall time. The results table's rows are measured seconds "
            "apart, and this machine's speed can drift by tens of percent in that time; a pair "
            "of shares taken one after the other sees the same machine. Pinned like the "
            "single-threaded workloads; the asyncio rows in this process, the gevent one in a "
            "monkey-patched child of its own.",
            "",
            *paired.table(results.paired),
        ]
    out += ["", "## How it was run", "", *how_it_was_run(results, info)]
    return "\n".join(out) + "\n"


def how_it_was_run(results: Results, info: RunInfo) -> list[str]:
    """The method, the machine and the software."""
    machine = ", ".join(f"{k}: {v}" for k, v in info.machine.items())
    software = ", ".join(f"{k} {v}" for k, v in info.versions.items())
    backends = "".join(f"\n  - **{b.name}**: {b.label}, `OPTIONS` {b.options}" for b in BACKENDS)
    lines = [
        f"- Command: `{info.command}` (started {info.started}, {info.seconds:,.0f} s in all).",
        f"- Machine: {machine}.",
        f"- Software: {software}; this repository at {info.revision}; native module "
        f"{info.native_build}.",
        f"- Pinning: {info.pinning}.",
        f"- Other load: {info.other_load}.",
        "- Clusters: `django_elasticache_rs.local.LocalCluster`, real memcached processes "
        "(`-t 1`) on 127.0.0.1 behind a configuration endpoint (a thread of the benchmark "
        "process), 3 nodes, and 10 nodes for the 10-node row; Auto Discovery backends get the "
        "endpoint as `LOCATION`, the others the node list. One Django configuration with an "
        "alias per backend and cluster; each alias has its own `KEY_PREFIX` (same length) and "
        f"`TIMEOUT: None`.{backends}",
        f"- Interleaved: {info.repetitions} repetitions; in each, every workload in turn, and "
        "for each workload every backend back to back, the order rotated by one from one "
        "workload and repetition to the next. Medians are reported.",
        "- Warm-up and checks: before timing, each backend stores the workload's data, reads it "
        "back (a backend that misses fails the check instead of looking fast), warms up "
        "(connections, discovery: discovering backends must see every node), and the same check "
        "runs again after the last repetition.",
        "- Iteration counts: calibrated once per workload from the warm-up of every backend, "
        "the same count for each: ~0.3 s at the geometric mean of their speeds, at most "
        "~0.8 s for the slowest (`--quick`: ~100x less), but at least ~0.05 s for each (a "
        "backend that fast runs more: a sample of a few milliseconds is at the mercy of one "
        "scheduler hiccup); the table's last column.",
        "- Request cycle: Django's `request_finished` receivers (`close_caches`, which closes "
        "every initialized alias, and `close_old_connections`) are replaced by one that closes "
        "the cache under test, as `close_caches` does in an app with one cache; no database "
        "is configured. Then 10 gets of present keys.",
        "- 8 threads: persistent threads, each using Django's per-thread cache object; "
        "unpinned (all CPUs, servers too); µs per op = wall time ÷ all threads' ops, CPU µs = "
        "process CPU (all threads) ÷ all ops.",
        "- asyncio: one `asyncio.run` per measurement, the operations awaited one after "
        "another inside it; timed inside the loop (starting and closing a loop is left out: "
        "it is no operation's cost, and would weigh as much as the count is small).",
    ]
    if results.baseline is not None:
        lines.append(
            "- Baseline: our blocking rows are compared with our numbers of an earlier run "
            "(`--baseline`, the `.json` each run writes next to its report)."
        )
    spreads = [
        (series.spread, workload, backend)
        for workload, by_backend in results.series.items()
        for backend, series in by_backend.items()
        if series.ok and len(series.samples) > 1
    ]
    if spreads:
        worst = max(spreads)
        lines.append(
            f"- Noise: the largest (max - min) ÷ median of the repetitions' wall times was "
            f"{worst[0]:.0%} ({worst[1]}, {worst[2]}); the median of all cells "
            f"{sorted(s[0] for s in spreads)[len(spreads) // 2]:.0%}."
        )
    errors = [
        f"{workload} / {backend}: {series.error}"
        for workload, by_backend in results.series.items()
        for backend, series in by_backend.items()
        if series.error
    ]
    errors += [f"reference {name}: {s.error}" for name, s in results.probes.items() if s.error]
    errors += greenlets.errors(results.gevent)
    errors += paired.errors(results.paired)
    if errors:
        lines.append("- Errors: " + "; ".join(errors) + ".")
    return lines
