#!/usr/bin/env bash
# The Django/Python matrix, run by scripts/test.sh after scripts/wheel.sh: Django's own cache test
# suite (tests/test_django_cache_suite.py, plaintext and TLS) against the backend installed from
# the built wheel, for each supported Django on a Python it supports, and the wheel's
# import-and-use check (scripts/wheel_check.py) on the oldest and newest Python we claim.
#
# Interpreters are the ones present: `pythonX.Y` on PATH, else pyenv's
# ($PYENV_ROOT/versions/X.Y.*). A Django whose Pythons are all absent is reported as NOT RUN by
# name (and fails the command when MATRIX_REQUIRE_ALL=1, as in CI); any failure fails it.
# Each entry's venv (.cache/venvs/matrix-*) is kept while its requirements stay the same; a new
# wheel is reinstalled into it. The entries run at once (the suite mostly waits on timeouts).
#
#   scripts/matrix.sh [WHEEL]     default: the one abi3 wheel in dist/
set -euo pipefail
# A wheel given as an argument is found from the caller's directory.
if (($# > 0)) && [[ -f $1 ]]; then
  set -- "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi
cd "$(dirname "$0")/.."
repo=$PWD

# Django version, then the Pythons to run it on, preferred first (each one Django supports).
# Together the preferred ones cover every Python the package claims (pyproject.toml classifiers).
DJANGOS=(
  "4.2 3.10 3.11 3.12"
  "5.2 3.11 3.10 3.12 3.13"
  "6.0 3.12 3.13"
  "6.1 3.13 3.12"
)
# The wheel's import-and-use check runs on these Pythons (abi3: one wheel for all of them).
WHEEL_PYTHONS=(3.10 3.13)
TEST_REQUIREMENTS=(pytest pytest-django pytest-timeout cryptography)

shopt -s nullglob
if (($# > 0)); then
  wheel=$1
else
  wheels=(dist/django_elasticache_rs-*-abi3-*.whl)
  if ((${#wheels[@]} != 1)); then
    echo "error: expected one abi3 wheel in dist/ (run scripts/wheel.sh), found ${#wheels[@]}" >&2
    exit 1
  fi
  wheel=${wheels[0]}
fi
wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
wheel_sum=$(sha256sum "$wheel" | cut -d' ' -f1)

# find_python X.Y: the path of a working Python X.Y with venv, or nothing.
find_python() {
  local version=$1 candidate
  local candidates=()
  candidate=$(command -v "python$version" 2>/dev/null) && candidates+=("$candidate")
  candidates+=("${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/python"$version")
  for candidate in "${candidates[@]}"; do
    # pyenv's shims are on PATH for every installed version but fail for inactive ones.
    if [[ $("$candidate" -c 'import sys, venv; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) == "$version" ]]; then
      echo "$candidate"
      return
    fi
  done
}

# venv NAME PYTHON REQUIREMENT...: a venv in .cache/venvs/NAME with the requirements and the
# wheel; prints its path. Reused while PYTHON and the requirements are unchanged.
venv() {
  local name=$1 python=$2
  shift 2
  local dir=.cache/venvs/$name
  local want
  want="$("$python" -c 'import sys; print(sys.version)') | $*"
  if [[ ! -x $dir/bin/python || $(cat "$dir/.requirements" 2>/dev/null) != "$want" ]]; then
    rm -rf "$dir"
    "$python" -m venv "$dir" >&2
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@" >&2
    echo "$want" >"$dir/.requirements"
  fi
  if [[ $(cat "$dir/.wheel" 2>/dev/null) != "$wheel_sum" ]]; then
    # --no-deps: the requirements above pin Django; the wheel brings no other dependency.
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel" >&2
    echo "$wheel_sum" >"$dir/.wheel"
  fi
  echo "$repo/$dir"
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
names=() pids=() descriptions=() not_run=()

# start NAME DESCRIPTION COMMAND...: runs COMMAND in the background, its output to a log.
start() {
  local name=$1 description=$2
  shift 2
  "$@" >"$logs/$name" 2>&1 &
  names+=("$name") pids+=($!) descriptions+=("$description")
}

python_of() { "$1/bin/python" -c 'import sys; print(sys.version.split()[0])'; }

echo "==> Django/Python matrix from $(basename "$wheel")"
declare -A venv_of_python=()
for entry in "${DJANGOS[@]}"; do
  read -r django pythons <<<"$entry"
  python=""
  for version in $pythons; do
    python=$(find_python "$version")
    [[ -n $python ]] && break
  done
  if [[ -z $python ]]; then
    not_run+=("Django $django: NOT RUN (no Python ${pythons// /, } found)")
    continue
  fi
  echo "    preparing Django $django on Python $version ($python)"
  dir=$(venv "matrix-django$django-py$version" "$python" "Django~=$django.0" "${TEST_REQUIREMENTS[@]}")
  venv_of_python[$version]=$dir
  django_version=$("$dir/bin/python" -c 'import django; print(django.get_version())')
  start "django$django" "Django $django_version on Python $(python_of "$dir")" \
    "$dir/bin/python" -m pytest tests/test_django_cache_suite.py -q
done

for version in "${WHEEL_PYTHONS[@]}"; do
  dir=${venv_of_python[$version]:-}
  if [[ -z $dir ]]; then
    python=$(find_python "$version")
    if [[ -z $python ]]; then
      not_run+=("wheel on Python $version: NOT RUN (no Python $version found)")
      continue
    fi
    dir=$(venv "wheel-py$version" "$python" "Django>=4.2")
  fi
  # From a directory outside the checkout, so that only the installed package can be imported.
  start "wheel$version" "wheel import-and-use on Python $(python_of "$dir")" \
    bash -c 'cd "$1" && exec "$2/bin/python" "$3/scripts/wheel_check.py"' _ "$logs" "$dir" "$repo"
done

failed=0
results=()
for i in "${!names[@]}"; do
  if wait "${pids[$i]}"; then
    outcome=passed
  else
    outcome=FAILED
    failed=1
  fi
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed)|(passed|failed|error).* in [0-9.]+s' "$logs/${names[$i]}" | tail -1 | tr -d '=' | xargs || true)
  results+=("${descriptions[$i]}: $outcome${summary:+ ($summary)}")
  if [[ $outcome == FAILED ]]; then
    echo "---- ${descriptions[$i]}: output ----"
    tail -n 60 "$logs/${names[$i]}"
  fi
done

echo "==> matrix results"
for line in "${results[@]}" "${not_run[@]}"; do
  echo "    $line"
done
if ((${#not_run[@]})) && [[ ${MATRIX_REQUIRE_ALL:-0} == 1 ]]; then
  echo "error: MATRIX_REQUIRE_ALL=1 and some entries were not run" >&2
  failed=1
fi
exit "$failed"
