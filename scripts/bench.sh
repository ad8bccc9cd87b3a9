#!/usr/bin/env bash
# The benchmark suite (issue 5): our backend next to django-elastipymemcache, Django's
# PyMemcacheCache and PyLibMCCache on local memcached clusters, interleaved in one run; writes a
# markdown report (default bench-results/results.md, not tracked) and prints it, the numbers as JSON
# next to it (results.json) and their plot (results.png: wall µs per workload, ours next to each
# alternative; `python -m bench.plot FILE.json` draws an earlier run's). Arguments go to `python -m bench`
# (`scripts/bench.sh --help`, `--quick`, `--only get_hit,get_many`, `--only gevent`, `--output FILE`,
# `--baseline OLD.json`: the numbers an earlier run wrote next to its report).
#
# On a fresh Debian machine with Rust and Python 3.10+ it installs what it needs: memcached, the
# venv and the native module in release mode (scripts/bootstrap.sh), then what pylibmc builds
# against when no wheel fits (apt-get) and the alternatives themselves (bench/requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

scripts/bootstrap.sh

# pylibmc ships wheels for some Pythons only; elsewhere pip builds it against libmemcached and
# zlib, with a C compiler and the interpreter's headers.
missing=()
for package in libmemcached-dev zlib1g-dev; do
  installed "$package" || missing+=("$package")
done
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ! .venv/bin/python -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  missing+=(python3-dev)
fi
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]} (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "==> installing the benchmark's Python dependencies (bench/requirements.txt)"
.venv/bin/python -m pip install -q -r bench/requirements.txt

# For the report: the exact command, and how the native module was built.
BENCH_COMMAND="scripts/bench.sh"
if (($# > 0)); then BENCH_COMMAND+=$(printf ' %q' "$@"); fi
export BENCH_COMMAND
export BENCH_NATIVE_BUILD="built in release mode by scripts/bootstrap.sh (maturin develop --release)"
exec .venv/bin/python -m bench "$@"
