#!/usr/bin/env bash
# Builds the release artifacts into dist/ and checks them: the abi3 wheel for manylinux2014
# x86_64 (glibc 2.17: Amazon Linux 2 and later; on an aarch64 host, the aarch64 one), built with
# maturin linking through zig (the `ziglang` package from PyPI), and the sdist. Then checks the
# wheel as a user gets it: auditwheel must call it manylinux_2_17 (of the host's architecture),
# its metadata must be the project's (version, Django dependency, classifiers PyPI accepts,
# license files), and it must install into a fresh venv with no Rust toolchain on PATH and work
# there against a real memcached (scripts/wheel_check.py).
#
#   scripts/wheel.sh                 build and check (what scripts/test.sh runs)
#   scripts/wheel.sh --check WHEEL   only the fresh-venv check of a wheel built elsewhere (the
#                                    release workflow runs it on each platform's wheel)
#
# The tools (maturin, ziglang, auditwheel, trove-classifiers) live in their own venv under
# .cache/venvs/, installed on first use. Needs memcached on PATH for the check (bootstrap.sh).
set -euo pipefail
# A wheel given as an argument is found from the caller's directory.
if [[ ${1:-} == --check && $# == 2 && -f $2 ]]; then
  set -- --check "$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
fi
cd "$(dirname "$0")/.."
repo=$PWD

python=${PYTHON:-python3}

# A PATH without any directory holding a Rust toolchain: the wheel must not need one.
path_without_rust() {
  local dir kept=()
  local IFS=:
  for dir in $PATH; do
    [[ -z $dir || -e $dir/cargo || -e $dir/rustc || -e $dir/rustup ]] && continue
    kept+=("$dir")
  done
  echo "${kept[*]}"
}

# check WHEEL [PYTHON]: installs WHEEL into a fresh venv (binary packages only, nothing built)
# and runs scripts/wheel_check.py with it, from outside the checkout and without Rust on PATH.
check_wheel() (
  local wheel=$1 interpreter=${2:-$python}
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  local bare
  bare=$(path_without_rust)
  echo "==> fresh venv ($("$interpreter" -c 'import sys; print(sys.version.split()[0])')), no Rust on PATH: installing $(basename "$wheel")"
  if PATH=$bare command -v cargo rustc >/dev/null 2>&1; then
    echo "error: a Rust toolchain is still on the check's PATH" >&2
    return 1
  fi
  "$interpreter" -m venv "$work/venv"
  (
    cd "$work"
    export PATH=$bare
    unset CARGO_HOME RUSTUP_HOME
    "$work/venv/bin/python" -m pip install -q --disable-pip-version-check --only-binary :all: "$wheel"
    "$work/venv/bin/python" "$repo/scripts/wheel_check.py"
  )
)

if [[ ${1:-} == --check ]]; then
  (($# == 2)) || { echo "usage: scripts/wheel.sh --check WHEEL" >&2; exit 2; }
  [[ -f $2 ]] || { echo "error: no such wheel: $2" >&2; exit 2; }
  check_wheel "$2"
  exit 0
fi
(($# == 0)) || { echo "usage: scripts/wheel.sh [--check WHEEL]" >&2; exit 2; }

tools=.cache/venvs/wheel-tools
requirements='maturin>=1.9,<2 ziglang auditwheel trove-classifiers'
if [[ ! -x $tools/bin/python || $(cat "$tools/.installed" 2>/dev/null) != "$requirements" ]]; then
  echo "==> installing the wheel tools into $tools: $requirements"
  rm -rf "$tools"
  "$python" -m venv "$tools"
  # shellcheck disable=SC2086 # one word per requirement
  "$tools/bin/python" -m pip install -q --disable-pip-version-check $requirements
  echo "$requirements" >"$tools/.installed"
fi

arch=$(uname -m)
case "$(uname -s)-$arch" in
  Linux-x86_64 | Linux-aarch64) ;;
  *)
    echo "error: scripts/wheel.sh builds the Linux x86_64 or aarch64 wheel; this is $(uname -s) $arch (the release workflow builds the others)" >&2
    exit 1
    ;;
esac
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
echo "==> building django-elasticache-rs $version: manylinux2014 $arch abi3 wheel (zig) and sdist"
mkdir -p dist
rm -f dist/django_elasticache_rs-* dist/django-elasticache-rs-*
# maturin runs `python -m ziglang` from the tool venv; target/ is shared with development builds
# (an explicit --target keeps this build's artifacts apart from `maturin develop`'s).
PATH=$repo/$tools/bin:$PATH "$tools/bin/maturin" build --release --zig \
  --compatibility manylinux2014 --target "$arch-unknown-linux-gnu" \
  --interpreter "$tools/bin/python" --out dist --quiet
"$tools/bin/maturin" sdist --out dist

shopt -s nullglob
wheels=(dist/django_elasticache_rs-"$version"-cp310-abi3-*.whl)
sdists=(dist/django_elasticache_rs-"$version".tar.gz)
if ((${#wheels[@]} != 1 || ${#sdists[@]} != 1)); then
  echo "error: expected one abi3 wheel and one sdist of $version in dist/, found: $(ls dist)" >&2
  exit 1
fi
wheel=${wheels[0]}
sdist=${sdists[0]}
ls -l "$wheel" "$sdist" | awk '{print "    " $5 " bytes  " $NF}'

echo "==> auditwheel show $(basename "$wheel")"
report=$("$tools/bin/auditwheel" show "$wheel")
echo "$report" | sed 's/^/    /'
if ! grep -q "\"manylinux_2_17_$arch\"" <<<"$report"; then
  echo "error: auditwheel does not call the wheel manylinux_2_17_$arch" >&2
  exit 1
fi

echo "==> metadata of the wheel and the sdist"
"$tools/bin/python" scripts/wheel_metadata.py "$version" "$wheel" "$sdist"

check_wheel "$repo/$wheel"
echo "==> dist/ ready: $(basename "$wheel"), $(basename "$sdist")"
