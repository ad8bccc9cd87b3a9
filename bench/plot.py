"""The plot of a run: wall µs per operation of each workload, ours next to each alternative, as a
PNG (matplotlib), from the ``.json`` a run writes next to its report.

``scripts/bench.sh`` makes it after each run (``bench-results/results.png``); to plot an earlier
run again: ``python -m bench.plot RESULTS.json [--output PLOT.png]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: The bars' colours, per backend name (ours first), readable in print and by the colour-blind.
COLOURS = {
    "ours": "#d55e00",
    "elastipymemcache": "#0072b2",
    "pymemcache": "#56b4e9",
    "pylibmc": "#009e73",
}


def plot(results: dict[str, Any], output: Path) -> Path:
    """Draws ``results`` (the run's JSON, as :func:`bench.run.results_json` writes it) into
    ``output``: one horizontal group of bars per workload, blocking calls above, ``a*`` calls
    below, on a log scale (the alternatives' batches are 10 to 100 times ours)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    backends: dict[str, str] = results["backends"]
    panels = [
        ("blocking calls", [w for w in results["workloads"] if not w["asyncio"]]),
        ("asyncio (a* methods)", [w for w in results["workloads"] if w["asyncio"]]),
    ]
    panels = [(title, rows) for title, rows in panels if rows]
    heights = [len(rows) for _, rows in panels]
    figure, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, 1.0 + 0.55 * sum(heights)),
        gridspec_kw={"height_ratios": heights},
        sharex=True,
        squeeze=False,
    )
    width = 0.8 / len(backends)
    for axis, (title, rows) in zip(axes[:, 0], panels, strict=True):
        for index, (name, label) in enumerate(backends.items()):
            positions = [row + index * width for row in range(len(rows))]
            values = [workload["wall_us"].get(name) or 0.0 for workload in rows]
            bars = axis.barh(positions, values, height=width, label=label, color=COLOURS.get(name))
            if name == "ours":
                axis.bar_label(bars, fmt="%.3g", fontsize=7, padding=2)
        axis.set_yticks([row + width * (len(backends) - 1) / 2 for row in range(len(rows))])
        axis.set_yticklabels([_title(workload) for workload in rows], fontsize=8)
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_title(title, fontsize=9, loc="left")
        axis.grid(axis="x", which="both", alpha=0.3)
    axes[-1, 0].set_xlabel("wall µs per operation (log scale; shorter is faster)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(backends), fontsize=8)
    heading = f"{results['started']}: {results['command'].replace(chr(92), '')}"
    figure.suptitle("\n".join(textwrap.wrap(heading, 120)), fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def _title(workload: dict[str, Any]) -> str:
    title = str(workload["title"])
    return title + (" (per call)" if workload["unit"] == "call" else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plot", description=__doc__)
    parser.add_argument("results", type=Path, help="the .json a run wrote next to its report")
    parser.add_argument("--output", type=Path, help="the PNG (default: RESULTS with .png)")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    if "workloads" not in results:
        parser.error(f"{args.results} holds our numbers only (a run before plots): run again")
    written = plot(results, args.output or args.results.with_suffix(".png"))
    print(f"plot written to {written}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
