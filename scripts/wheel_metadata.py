"""Checks the metadata of the built wheel and sdist (run by scripts/wheel.sh in its tool venv).

usage: wheel_metadata.py VERSION WHEEL SDIST

Both must carry ``VERSION`` (the Cargo workspace's), ``Requires-Dist: Django>=4.2``, the
license expression and both license files, and classifiers that PyPI accepts (the
``trove-classifiers`` list, which PyPI's upload checks against). Prints what it found.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser

from trove_classifiers import classifiers as known_classifiers

LICENSE_FILES = ("LICENSE-MIT", "LICENSE-APACHE")
LICENSE = "MIT OR Apache-2.0"
DJANGO = "Django>=4.2"


def check(kind: str, metadata: Message, files: list[str], version: str) -> list[str]:
    problems = []
    if metadata["Version"] != version:
        problems.append(f"{kind}: Version {metadata['Version']} is not {version}")
    # Project names compare case-insensitively (maturin writes "django>=4.2").
    if DJANGO.lower() not in [r.lower() for r in metadata.get_all("Requires-Dist") or []]:
        problems.append(f"{kind}: no Requires-Dist {DJANGO}")
    if metadata["License-Expression"] != LICENSE:
        problems.append(f"{kind}: License-Expression {metadata['License-Expression']!r}")
    declared = metadata.get_all("License-File") or []
    for name in LICENSE_FILES:
        if name not in declared:
            problems.append(f"{kind}: License-File {name} not declared")
        if not any(path.endswith(f"/{name}") for path in files):
            problems.append(f"{kind}: {name} is not in the archive")
    classifiers = metadata.get_all("Classifier") or []
    unknown = [c for c in classifiers if c not in known_classifiers]
    if unknown:
        problems.append(f"{kind}: classifiers PyPI would refuse: {unknown}")
    if not problems:
        print(
            f"    {kind}: version {version}, {DJANGO}, {LICENSE} with {', '.join(LICENSE_FILES)}, "
            f"{len(classifiers)} known classifiers"
        )
    return problems


def main(version: str, wheel: str, sdist: str) -> int:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        wheel_meta = Parser().parsestr(archive.read(meta).decode())
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
        (meta,) = [n for n in members if n.count("/") == 1 and n.endswith("/PKG-INFO")]
        extracted = archive.extractfile(meta)
        assert extracted is not None
        sdist_meta = Parser().parsestr(extracted.read().decode())
    problems = check("wheel", wheel_meta, names, version) + check(
        "sdist", sdist_meta, members, version
    )
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
