#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine with Rust and Python 3.10+:
# memcached and headless Chromium (apt-get), a virtualenv in .venv with the test dependencies, and the native module
# built by maturin into it. Safe to run again: it only does what is missing or out of date.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v memcached >/dev/null 2>&1; then
  echo "==> installing memcached (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq memcached >/dev/null
  # Tests start their own servers on random ports; the packaged service is not needed.
  as_root systemctl disable --now memcached >/dev/null 2>&1 || true
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  # The admin status page is checked in a real browser (tests/test_admin_status.py).
  echo "==> installing chromium and chromium-driver (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# pylibmc (a test dependency: placement and values are checked against it) ships wheels for
# some Pythons only; elsewhere pip builds it against libmemcached and zlib, with a C compiler
# and the interpreter's headers.
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
missing=()
for package in libmemcached-dev zlib1g-dev; do
  installed "$package" || missing+=("$package")
done
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
if ! "${PYTHON:-python3}" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  missing+=(python3-dev)
fi
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]} (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "==> creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.requirements-installed
if [[ ! -f $stamp || requirements-dev.txt -nt $stamp ]]; then
  echo "==> installing Python dependencies"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements-dev.txt
  touch "$stamp"
fi

echo "==> building the native module (maturin, release)"
.venv/bin/maturin develop --release --quiet
