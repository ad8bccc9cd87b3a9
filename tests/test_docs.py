"""The documentation site stays true to the code: the configuration reference
(``docs/configuration.md``) has one row per option of ``options.DEFAULTS``, none more, each with
its default and what the options' table (``_native.OPTIONS``) says it accepts; the stub of the
native ``Client`` lists the table's defaults; the pages the site's navigation names exist.
(``mkdocs build --strict`` in scripts/test.sh checks the links.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from django_elasticache_rs._native import OPTIONS
from django_elasticache_rs.options import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
STUB = Path(__file__).resolve().parent.parent / "python/django_elasticache_rs/_native.pyi"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| `(?P<default>[^`]*)` \|")
ACCEPTS = re.compile(r"^\| `(?P<name>[a-z_]+)` \| `[^`]*` \| (?P<accepts>[^|]*) \|")


def documented_options(page: str) -> dict[str, Any]:
    """Option name -> default, from the rows of the table under the ``OPTIONS`` heading."""
    section = page.split("## `OPTIONS`", 1)[1].split("\n## ", 1)[0]
    found: dict[str, Any] = {}
    for line in section.splitlines():
        match = ROW.match(line)
        if match:
            name = match["name"]
            assert name not in found, f"{name} has two rows"
            found[name] = ast.literal_eval(match["default"])
    return found


def test_every_option_is_documented_with_its_default_and_no_other() -> None:
    documented = documented_options((DOCS / "configuration.md").read_text())
    missing = sorted(DEFAULTS.keys() - documented.keys())
    extra = sorted(documented.keys() - DEFAULTS.keys())
    assert not missing, f"options missing from docs/configuration.md: {missing}"
    assert not extra, f"docs/configuration.md documents options that do not exist: {extra}"
    wrong = {
        name: (documented[name], default)
        for name, default in DEFAULTS.items()
        if documented[name] != default or type(documented[name]) is not type(default)
    }
    assert not wrong, f"documented default != DEFAULTS (documented, actual): {wrong}"


def documented_accepts(page: str) -> dict[str, str]:
    """Option name -> its "accepts" cell, from the same table."""
    section = page.split("## `OPTIONS`", 1)[1].split("\n## ", 1)[0]
    return {m["name"]: m["accepts"] for m in map(ACCEPTS.match, section.splitlines()) if m}


def _shown(value: Any) -> str:
    """A literal as the docs write it: strings in double quotes, in backticks."""
    return f'`"{value}"`' if isinstance(value, str) else f"`{value!r}`"


def accepts_mismatches(page: str) -> dict[str, str]:
    """Option name -> how its "accepts" cell differs from the table: a bound or a choice it
    does not name, or ``None`` named or not against what the option accepts."""
    accepts = documented_accepts(page)
    wrong: dict[str, str] = {}
    for spec in OPTIONS:
        cell = accepts[spec["name"]]
        numbers = set(re.findall(r"\d+", cell))
        for bound in (spec["low"], spec["high"]):
            if bound is not None and str(int(bound)) not in numbers:
                wrong[spec["name"]] = f"bound {bound} not in {cell!r}"
        for choice in spec["choices"] or ():
            if _shown(choice) not in cell:
                wrong[spec["name"]] = f"{_shown(choice)} not in {cell!r}"
        if spec["none"] != ("`None`" in cell):
            accepted = "accepted" if spec["none"] else "refused"
            wrong[spec["name"]] = f"None is {accepted} but {cell!r}"
    return wrong


def test_every_option_is_documented_with_what_the_table_says_it_accepts() -> None:
    wrong = accepts_mismatches((DOCS / "configuration.md").read_text())
    assert not wrong, f"docs/configuration.md's accepts column != _native.OPTIONS: {wrong}"


def test_the_native_client_stub_lists_the_tables_defaults() -> None:
    """``Client(**options)`` takes its defaults from the table; its stub spells them out."""
    tree = ast.parse(STUB.read_text())
    client = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Client")
    new = next(n for n in client.body if isinstance(n, ast.FunctionDef) and n.name == "__new__")
    stubbed = {
        arg.arg: ast.literal_eval(default)
        for arg, default in zip(new.args.kwonlyargs, new.args.kw_defaults, strict=True)
        if default is not None
    }
    native = {spec["name"]: spec["client_default"] for spec in OPTIONS if spec["native"]}
    extra = {"tls_ca_certs", "tls_verify", "tls_check_hostname", "on_event"}
    assert stubbed.keys() - extra == native.keys()
    wrong = {
        name: (stubbed[name], default)
        for name, default in native.items()
        if stubbed[name] != default or type(stubbed[name]) is not type(default)
    }
    assert not wrong, f"_native.pyi's Client defaults != the table's (stub, table): {wrong}"


def test_the_readmes_option_table_names_every_option_and_no_other() -> None:
    """The README's table (PyPI's page) groups some options in a row and words some defaults;
    its names at least are the table's."""
    readme = (DOCS.parent / "README.md").read_text()
    section = readme.split("### Options", 1)[1].split("\n### ", 1)[0]
    named = {
        name
        for line in section.splitlines()
        if line.startswith("| `")
        for name in re.findall(r"`([a-z_]+)`", line.split(" | ", 1)[0])
    }
    missing, extra = sorted(DEFAULTS.keys() - named), sorted(named - DEFAULTS.keys())
    assert not missing and not extra, f"README's option table: missing {missing}, extra {extra}"


def test_the_table_parser_sees_a_missing_row_and_a_wrong_default() -> None:
    page = (DOCS / "configuration.md").read_text()
    without_timeout = "\n".join(
        line for line in page.splitlines() if not line.startswith("| `timeout` |")
    )
    assert "timeout" not in documented_options(without_timeout)
    changed = page.replace("| `dead_timeout` | `60.0` |", "| `dead_timeout` | `30.0` |")
    assert documented_options(changed)["dead_timeout"] == 30.0
    bounds = page.replace("| an `int` from 1 to 9 |", "| an `int` from 1 to 10 |")
    assert set(accepts_mismatches(bounds)) == {"compress_level"}
    choices = page.replace('`"pylibmc"` or `"ketama"`', '`"pylibmc"`')
    assert set(accepts_mismatches(choices)) == {"hashing"}


def test_every_page_in_the_navigation_exists() -> None:
    config = (DOCS.parent / "mkdocs.yml").read_text()
    pages = re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.MULTILINE)
    assert "configuration.md" in pages
    assert not [page for page in pages if not (DOCS / page).is_file()]


README = DOCS.parent / "README.md"
LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")


def pylibmc_table(page: str, heading: str) -> list[str]:
    """The rows of the "in ``PyLibMCCache`` | here" table under ``heading``."""
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| in `PyLibMCCache`"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_the_readmes_pylibmccache_table_is_the_migration_pages() -> None:
    """docs/migrating.md holds the table; the README's is the same, its links written as the
    README names sections (``[Compression](configuration.md#compression)`` becomes
    ``**Compression**``)."""
    source = pylibmc_table((DOCS / "migrating.md").read_text(), "## From Django's `PyLibMCCache`")
    readme = pylibmc_table(README.read_text(), "## Moving from PyLibMCCache")
    assert len(source) > 4
    assert readme == [LINK.sub(r"**\1**", row) for row in source]
