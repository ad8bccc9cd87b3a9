#!/usr/bin/env bash
# The soak test (issue 9; not in CI): sync threads, asyncio tasks and gevent greenlets (a process
# of their own) use the Django backend, with ignore_exc off and on, against a local memcached
# cluster (loopback only) while nodes are killed and restarted on the same port, added and removed.
# Prints one line of figures every 10 s (ops, errors by type, wrong values, RSS, malloc heap, fds,
# threads, ...) and a summary; exits 1 if a wrong value was read or an exception other than the
# cache's escaped. Arguments go to `python -m bench.soak`:
#
#   scripts/soak.sh                         # 10 minutes
#   scripts/soak.sh --duration 180          # 3 minutes
#   MALLOC_ARENA_MAX=2 scripts/soak.sh      # the memory question: glibc arenas capped
#   scripts/soak.sh --help                  # every option
#
# It installs what it needs first (scripts/bootstrap.sh: memcached, the venv, the native module).
set -euo pipefail
cd "$(dirname "$0")/.."

help=false
for arg in "$@"; do [[ $arg == -h || $arg == --help ]] && help=true; done
if ! $help || [[ ! -x .venv/bin/python ]]; then
  scripts/bootstrap.sh
fi
exec .venv/bin/python -m bench.soak "$@"
