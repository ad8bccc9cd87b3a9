#!/usr/bin/env bash
# The benchmark suite (issue 5): our backend next to django-elastipymemcache, Django's
# PyMemcacheCache and PyLibMCCache on local memcached clusters, interleaved in one run; writes a
# markdown report (default bench-results/results.md, not tracked) and prints it, the numbers as JSON
# next to it (results.json) and their plot (results.png: wall µs per workload, ours next to each
# alternative; `python -m bench.plot FILE.json` draws an earlier run's). Arguments go to `python -m bench`
# (`scripts/bench.sh --help`, `--quick`, `--only get_hit,get_many`, `--only gevent`,
# `--only paired`: issue 23's batch comparisons back to back in rounds, `--output FILE`,
# `--baseline OLD.json`: the numbers an earlier run wrote next to its report).
#
# On a fresh Debian machine with Rust and Python 3.10+ it installs what it needs: memcached, what
# pylibmc builds against, the venv and the native module in release mode (scripts/bootstrap.sh),
# then the alternatives themselves (bench/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/bootstrap.sh

echo "==> installing the benchmark's Python dependencies (bench/requirements.txt)"
.venv/bin/python -m pip install -q -r bench/requirements.txt

# For the report: the exact command, and how the native module was built.
BENCH_COMMAND="scripts/bench.sh"
if (($# > 0)); then BENCH_COMMAND+=$(printf ' %q' "$@"); fi
export BENCH_COMMAND
export BENCH_NATIVE_BUILD="built in release mode by scripts/bootstrap.sh (maturin develop --release)"
exec .venv/bin/python -m bench "$@"
