"""Fetch Django's ``tests/cache`` package from the Django sdist on PyPI, at test time.

Django's test suite is not shipped in its wheel, and we do not vendor it: the sdist of
exactly the installed Django version is downloaded with pip and only ``tests/cache/`` is
extracted, to ``<repo>/.cache/django-tests/<version>/cache/`` (``/.cache/`` is git-ignored).

The fetch is idempotent and safe when several test processes run it at once: everything
happens in a private temporary directory which is renamed into place in one step; a
process that loses the race throws its copy away and uses the winner's.

Set ``$DJANGO_SUITE_SDIST`` to the path of a local ``django-<version>.tar.gz`` to skip
the download (e.g. offline).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_ROOT = REPO_ROOT / ".cache" / "django-tests"
SDIST_ENV = "DJANGO_SUITE_SDIST"
PIP_TIMEOUT_S = 600
# Django's ``cache`` test package: tests.py and the modules it imports or names as backends.
REQUIRED_FILES = (
    "__init__.py",
    "tests.py",
    "models.py",
    "closeable_cache.py",
    "liberal_backend.py",
)
MARKER = "SOURCE.txt"


class SuiteFetchError(RuntimeError):
    """The Django test sources could not be obtained."""


def suite_root(version: str) -> Path:
    """The directory that holds the extracted ``cache`` package for ``version``."""
    return CACHE_ROOT / version


def is_complete(root: Path) -> bool:
    """True if ``root`` holds a finished extraction (marker file and the whole package)."""
    return (root / MARKER).is_file() and _has_package(root / "cache")


def _has_package(package: Path) -> bool:
    return all((package / name).is_file() for name in REQUIRED_FILES)


def ensure_django_cache_tests(version: str | None = None) -> Path:
    """Return the directory containing Django's ``cache`` test package, fetching it if needed.

    ``version`` defaults to the installed ``django.__version__``.  Raises
    ``SuiteFetchError`` with a readable explanation on any failure.
    """
    if version is None:
        import django

        version = django.__version__
    root = suite_root(version)
    if is_complete(root):
        return root
    if root.exists() and any(root.iterdir()):
        raise SuiteFetchError(
            f"{root} exists but is not a complete extraction of Django {version}'s "
            "tests/cache; delete it and run again"
        )
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{version}-", dir=CACHE_ROOT) as tmp:
        work = Path(tmp)
        sdist = _obtain_sdist(version, work / "download")
        staging = work / "staging"
        _extract_cache_tests(sdist, version, staging)
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        (staging / MARKER).write_text(
            f"Extracted from {sdist.name} (sha256 {digest}) by tests/django_suite/fetch.py.\n"
            "Django's own test code, BSD-3-Clause, fetched at test time: do not commit.\n"
        )
        try:
            os.rename(staging, root)  # atomic; fails if another process got there first
        except OSError:
            if not is_complete(root):
                raise
    if not is_complete(root):  # pragma: no cover - defensive
        raise SuiteFetchError(f"extraction of Django {version} tests into {root} is incomplete")
    return root


def _obtain_sdist(version: str, dest: Path) -> Path:
    local = os.environ.get(SDIST_ENV)
    if local:
        path = Path(local)
        if not path.is_file():
            raise SuiteFetchError(f"${SDIST_ENV}={local} is not a file")
        return path
    dest.mkdir(parents=True)
    # --no-binary Django: the wheel has no tests; pip still prepares the sdist's metadata,
    # for which it builds an isolated environment (setuptools from the index).
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "Django",
        "--disable-pip-version-check", "--no-input", "--dest", str(dest), f"Django=={version}",
    ]  # fmt: skip
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SuiteFetchError(_explain(version, cmd, str(exc))) from exc
    sdists = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or len(sdists) != 1:
        raise SuiteFetchError(_explain(version, cmd, (proc.stdout + proc.stderr)[-3000:]))
    return sdists[0]


def _explain(version: str, cmd: list[str], detail: str) -> str:
    return (
        f"could not download the Django {version} sdist, which holds the test suite "
        f"this harness runs.\ncommand: {' '.join(cmd)}\n{detail.strip()}\n"
        f"(needs access to the package index; or set ${SDIST_ENV} to a local "
        f"django-{version}.tar.gz)"
    )


def _extract_cache_tests(sdist: Path, version: str, staging: Path) -> None:
    """Extract ``<top>/tests/cache/**`` of ``sdist`` to ``staging/cache/**``."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            expected_top = f"django-{version}".lower()
            for member in tar.getmembers():
                top, _, rest = member.name.partition("/")
                if top.lower() != expected_top:
                    raise SuiteFetchError(f"{sdist} is not the sdist of Django {version}")
                if rest.startswith("tests/cache/") and (member.isfile() or member.isdir()):
                    member.name = rest.removeprefix("tests/")
                    members.append(member)
            if not members:
                raise SuiteFetchError(f"{sdist.name} contains no tests/cache/ directory")
            staging.mkdir(parents=True)
            tar.extractall(staging, members=members, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SuiteFetchError(f"cannot extract tests/cache from {sdist}: {exc}") from exc
    if not _has_package(staging / "cache"):
        raise SuiteFetchError(
            f"{sdist.name} (Django {version}) lacks one of tests/cache/{REQUIRED_FILES}"
        )
