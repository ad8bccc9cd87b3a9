"""Writes the commands' stubs into ``_native.pyi`` from their declarations.

Each command of the native ``Client`` is declared once, in ``crates/python/src/client.rs``
(``declare::commands!``), which gives ``_native._COMMANDS``: its name, Python parameters,
return type and doc. Its blocking method and its ``start_*`` operation are written here between
the stub's two markers, then formatted by ruff as the rest of the stub is.

    .venv/bin/python scripts/native_stubs.py          # rewrites the stub
    .venv/bin/python scripts/native_stubs.py --check  # fails if it is out of date

``tests/test_native_stubs.py`` runs the check.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

STUB = Path(__file__).resolve().parent.parent / "python" / "django_elasticache_rs" / "_native.pyi"
BEGIN = "    # Generated from the commands' declarations by scripts/native_stubs.py: do not edit.\n"
END = "    # End of the generated commands.\n"


def _docstring(lines: list[str], indent: str) -> str:
    # Rust's doc comments keep the space after `///`.
    text = [line[1:] if line.startswith(" ") else line for line in lines]
    body = f"\n{indent}".join(text).replace("`", "``").replace("````", "``")
    return f'{indent}"""{body}"""\n'


def _method(name: str, params: list[str], returns: str, doc: list[str]) -> str:
    arguments = ", ".join(["self", *params])
    return f"    def {name}({arguments}) -> {returns}:\n" + _docstring(doc, " " * 8)


def section(commands: tuple[tuple[str, list[str], str, list[str]], ...]) -> str:
    """The stub's generated part, unformatted: each command's blocking method, then its
    operation."""
    methods = []
    for name, params, returns, doc in commands:
        methods.append(_method(name, params, returns, doc))
        methods.append(
            _method(f"start_{name}", params, "Operation", [f" ``{name}`` as an ``Operation``."])
        )
    return "".join(methods)


def render(current: str) -> str:
    """The stub with its generated part made anew from ``_native._COMMANDS``, formatted."""
    from django_elasticache_rs import _native

    before, rest = current.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    text = before + BEGIN + section(_native._COMMANDS) + END + after
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(STUB), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the stub is out of date")
    args = parser.parse_args()
    current = STUB.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(f"{STUB} is out of date: run scripts/native_stubs.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        STUB.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
