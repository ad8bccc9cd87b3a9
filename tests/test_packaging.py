"""The package's metadata tells the truth: the Django and Python versions its classifiers claim
are the ones scripts/matrix.sh tests (Django's cache suite on each Django, on the Python
preferred for it, and the wheel's import-and-use check); the version is the Cargo workspace's,
is the module's ``__version__`` and is the changelog's latest release. Read from the installed
distribution's metadata, as maturin built it from pyproject.toml."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import django_elasticache_rs

ROOT = Path(__file__).resolve().parent.parent
META = metadata.metadata("django-elasticache-rs")


def _matrix() -> tuple[dict[str, str], set[str]]:
    """scripts/matrix.sh's Django versions (each with its preferred Python) and wheel Pythons."""
    script = (ROOT / "scripts" / "matrix.sh").read_text()
    djangos_block = re.search(r"^DJANGOS=\(\n(.*?)^\)", script, re.MULTILINE | re.DOTALL)
    wheel_block = re.search(r"^WHEEL_PYTHONS=\((.*?)\)", script, re.MULTILINE)
    assert djangos_block and wheel_block, "scripts/matrix.sh lost DJANGOS or WHEEL_PYTHONS"
    djangos = {}
    for line in djangos_block.group(1).splitlines():
        django, preferred, *_ = line.strip().strip('"').split()
        djangos[django] = preferred
    return djangos, set(wheel_block.group(1).split())


def _claimed(pattern: str) -> set[str]:
    """The last part of each classifier matching ``pattern``."""
    classifiers = META.get_all("Classifier") or []
    return {c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(pattern, c)}


def test_django_classifiers_are_the_tested_djangos() -> None:
    djangos, _ = _matrix()
    assert _claimed(r"Framework :: Django :: \d+\.\d+") == set(djangos)
    assert "django>=4.2" in [r.lower() for r in META.get_all("Requires-Dist") or []]


def test_python_classifiers_are_the_tested_pythons() -> None:
    djangos, wheel_pythons = _matrix()
    claimed = _claimed(r"Programming Language :: Python :: 3\.\d+")
    assert claimed == set(djangos.values()) | wheel_pythons
    oldest = min(claimed, key=lambda version: int(version.split(".")[1]))
    assert META["Requires-Python"] == f">={oldest}"


def test_one_version_from_cargo_to_the_module_and_the_changelog() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    found = re.search(r'^\[workspace\.package\]\nversion = "([^"]+)"$', cargo, re.MULTILINE)
    assert found
    version = found.group(1)
    assert django_elasticache_rs.__version__ == version == META["Version"]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$", changelog, re.MULTILINE)
    assert releases and releases[0] == version


def test_license_files_match_the_license_expression() -> None:
    cargo = (ROOT / "Cargo.toml").read_text()
    assert f'license = "{META["License-Expression"]}"' in cargo
    assert META["License-Expression"] == "MIT OR Apache-2.0"
    assert META.get_all("License-File") == ["LICENSE-MIT", "LICENSE-APACHE"]
    assert "Permission is hereby granted" in (ROOT / "LICENSE-MIT").read_text()
    assert "Version 2.0, January 2004" in (ROOT / "LICENSE-APACHE").read_text()


def test_the_readme_links_work_on_pypi() -> None:
    """The README is the package's description on PyPI, which shows it without the repository:
    a relative link or image there leads nowhere."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert targets, "the README has no links: the pattern is wrong"
    relative = [t for t in targets if not re.match(r"(https?://|#|mailto:)", t)]
    assert not relative, f"relative links in README.md: {relative}"
