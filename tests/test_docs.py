"""The documentation site stays true to the code: the configuration reference
(``docs/configuration.md``) has one row per option of ``options.DEFAULTS``, none more, each with
its default; the pages the site's navigation names exist. (``mkdocs build --strict`` in
scripts/test.sh checks the links.)"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from django_elasticache_rs.options import DEFAULTS

DOCS = Path(__file__).resolve().parent.parent / "docs"
ROW = re.compile(r"^\| `(?P<name>[a-z_]+)` \| `(?P<default>[^`]*)` \|")


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


def test_the_table_parser_sees_a_missing_row_and_a_wrong_default() -> None:
    page = (DOCS / "configuration.md").read_text()
    without_timeout = "\n".join(
        line for line in page.splitlines() if not line.startswith("| `timeout` |")
    )
    assert "timeout" not in documented_options(without_timeout)
    changed = page.replace("| `dead_timeout` | `60.0` |", "| `dead_timeout` | `30.0` |")
    assert documented_options(changed)["dead_timeout"] == 30.0


def test_every_page_in_the_navigation_exists() -> None:
    config = (DOCS.parent / "mkdocs.yml").read_text()
    pages = re.findall(r"^  - [^:]+: (\S+\.md)$", config, re.MULTILINE)
    assert "configuration.md" in pages
    assert not [page for page in pages if not (DOCS / page).is_file()]
