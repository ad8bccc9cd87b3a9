"""Writes what is generated from the commands' declarations, so that a command is written once.

- ``_native.pyi``: each native command's stubs (its blocking method and its ``start_*``
  operation), from its declaration in ``crates/python/src/client.rs`` (``declare::commands!``),
  which ``_native._COMMANDS`` gives: name, Python parameters, return type and doc.
- ``backend.py``: the async twin of each cache method declared with ``@command``, from the
  method's own body (``twin``).

Each goes between its file's two markers, then the file is formatted by ruff.

    .venv/bin/python scripts/generate.py          # rewrites both
    .venv/bin/python scripts/generate.py --check  # fails if either is out of date

``tests/test_generated.py`` runs the check.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "django_elasticache_rs"
STUB = PACKAGE / "_native.pyi"
BACKEND = PACKAGE / "backend.py"
MARK = "    # Generated from the commands' declarations by scripts/generate.py: do not edit.\n"
STUB_END = "    # End of the generated commands.\n"
BACKEND_END = "    # End of the generated twins.\n"


# The stubs.


def _docstring(lines: list[str], indent: str) -> str:
    # Rust's doc comments keep the space after `///`; Python's docs quote code in ``.
    text = [line[1:] if line.startswith(" ") else line for line in lines]
    body = f"\n{indent}".join(text).replace("`", "``").replace("````", "``")
    return f'{indent}"""{body}"""\n'


def _method(name: str, params: list[str], returns: str, doc: list[str]) -> str:
    arguments = ", ".join(["self", *params])
    return f"    def {name}({arguments}) -> {returns}:\n" + _docstring(doc, " " * 8)


def stubs() -> str:
    """Each command's blocking method, then its operation, unformatted."""
    from django_elasticache_rs import _native

    methods = []
    for name, params, returns, doc in _native._COMMANDS:
        methods.append(_method(name, params, returns, doc))
        operation = [f" `{name}` as an `Operation`."]
        methods.append(_method(f"start_{name}", params, "Operation", operation))
    return "".join(methods)


# The backend's async twins.


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _on_self(node: ast.expr, attribute: str) -> bool:
    """Whether ``node`` is ``self.<attribute>``."""
    return isinstance(node, ast.Attribute) and node.attr == attribute and _is_self(node.value)


def _run(operation: ast.expr) -> ast.expr:
    return ast.Await(ast.Call(ast.Name("run"), [operation], []))


class _Awaiting(ast.NodeTransformer):
    """A blocking body's calls made async: ``self._blocking.NAME(...)`` awaits
    ``run(self._native_client.start_NAME(...))``, ``self._handle.drive(op)`` awaits
    ``run(op)``, and ``self.COMMAND(...)`` awaits ``self.aCOMMAND(...)``."""

    def __init__(self, commands: set[str]) -> None:
        self.commands = commands

    def visit_Call(self, node: ast.Call) -> ast.expr:
        self.generic_visit(node)
        called = node.func
        if not isinstance(called, ast.Attribute):
            return node
        if _on_self(called.value, "_blocking"):
            client = ast.Attribute(ast.Name("self"), "_native_client")
            start = ast.Attribute(client, f"start_{called.attr}")
            return _run(ast.Call(start, node.args, node.keywords))
        if _on_self(called.value, "_handle") and called.attr == "drive":
            return _run(node.args[0])
        if _is_self(called.value) and called.attr in self.commands:
            twin = ast.Attribute(ast.Name("self"), f"a{called.attr}")
            return ast.Await(ast.Call(twin, node.args, node.keywords))
        return node


def _runs(node: ast.expr) -> bool:
    """Whether ``node`` is ``await run(...)``, whose value is ``Any``."""
    return (
        isinstance(node, ast.Await)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "run"
    )


def twin(method: ast.FunctionDef, commands: set[str]) -> ast.AsyncFunctionDef:
    """The async twin of a blocking cache method: its body awaiting what it called."""
    body = list(method.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring is the blocking method's
    awaiting = _Awaiting(commands)
    statements: list[ast.stmt] = []
    for statement in (awaiting.visit(s) for s in body):
        statements.extend(_typed_returns(statement, method.returns))
    return ast.AsyncFunctionDef(
        name=f"a{method.name}",
        args=method.args,
        body=statements,
        decorator_list=[],
        returns=method.returns,
        type_params=[],
    )


def _typed_returns(statement: ast.stmt, returns: ast.expr | None) -> list[ast.stmt]:
    """``statement`` with each ``return await run(...)`` assigned to a typed ``result`` first
    (strict mypy refuses to return ``Any`` from a typed method)."""
    typed = returns is not None and ast.unparse(returns) not in ("Any", "None")
    if isinstance(statement, ast.Return):
        if typed and statement.value is not None and _runs(statement.value):
            assert returns is not None
            result = ast.Name("result")
            return [
                ast.AnnAssign(result, returns, statement.value, simple=1),
                ast.Return(ast.Name("result")),
            ]
        return [statement]
    for field in ("body", "orelse"):
        inner = getattr(statement, field, None)
        if isinstance(inner, list):
            setattr(statement, field, [s for i in inner for s in _typed_returns(i, returns)])
    return [statement]


def _declared(node: ast.FunctionDef) -> bool:
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "command"
        for d in node.decorator_list
    )


def twins(backend: str) -> str:
    """The async twins of the methods ``ElastiCache`` declares with ``@command``."""
    tree = ast.parse(backend)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ElastiCache")
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef) and _declared(n)]
    commands = {m.name for m in methods}
    made = [ast.unparse(ast.fix_missing_locations(twin(m, commands))) for m in methods]
    return "".join(_indented(text) + "\n" for text in made)


def _indented(text: str) -> str:
    return "".join(f"    {line}\n" if line else "\n" for line in text.splitlines())


# Both files.


def _between(current: str, end: str, generated: str) -> str:
    before, rest = current.split(MARK, 1)
    _, after = rest.split(end, 1)
    return before + MARK + generated + end + after


def _formatted(path: Path, text: str) -> str:
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(path), "-"],
        input=text,
        capture_output=True,
        text=True,
        check=True,
    )
    return formatted.stdout


def render() -> dict[Path, tuple[str, str]]:
    """Each generated file: (as it is, as it should be)."""
    stub, backend = STUB.read_text(), BACKEND.read_text()
    return {
        STUB: (stub, _formatted(STUB, _between(stub, STUB_END, stubs()))),
        BACKEND: (backend, _formatted(BACKEND, _between(backend, BACKEND_END, twins(backend)))),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args()
    stale = []
    for path, (current, wanted) in render().items():
        if wanted != current:
            stale.append(path)
            if not args.check:
                path.write_text(wanted)
    if args.check and stale:
        names = ", ".join(str(path) for path in stale)
        print(f"out of date: {names} (run scripts/generate.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
