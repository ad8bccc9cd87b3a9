#!/usr/bin/env bash
# The demo: three local memcached nodes and a short Django script on the backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python examples/demo.py "$@"
