#!/usr/bin/env bash
# The whole test suite: formatting and lints, the CI workflows' schema, the documentation site,
# the release wheel and the Django/Python matrix on it, Rust tests, Python tests (against real
# memcached processes the tests start themselves), Django's own cache test suite. Installs what
# it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> ruff"
.venv/bin/ruff check python tests bench examples
.venv/bin/ruff format --check python tests bench examples
echo "==> mypy"
.venv/bin/mypy
echo "==> import-linter"
# The Python package's layers: [tool.importlinter] in pyproject.toml.
.venv/bin/lint-imports
echo "==> stubtest"
# The stubs (_native.pyi) and the package's own annotations against the built module.
.venv/bin/python -m mypy.stubtest django_elasticache_rs --mypy-config-file pyproject.toml \
  --allowlist scripts/stubtest-allowlist.txt
echo "==> GitHub workflows (check-jsonschema)"
.venv/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
echo "==> documentation site (mkdocs build --strict)"
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
# Not --quiet: it hides the warnings that --strict turns into a failure.
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site"
echo "==> wheel and sdist (scripts/wheel.sh)"
scripts/wheel.sh
echo "==> Django/Python matrix (scripts/matrix.sh)"
scripts/matrix.sh
echo "==> cargo test"
# The bindings crate's unit tests (the error-to-exception mapping) embed the interpreter PyO3
# finds (python3 on PATH), so that Python needs its shared library (pyenv and python.org builds
# have it; on Debian, libpython3-dev). The extension itself never links it: maturin sets
# PYO3_BUILD_EXTENSION_MODULE.
cargo test --workspace --quiet
echo "==> pytest"
.venv/bin/python -m pytest "$@"
