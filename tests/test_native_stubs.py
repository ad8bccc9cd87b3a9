"""The commands' part of ``_native.pyi`` is what their declarations make of it
(``scripts/native_stubs.py`` from ``_native._COMMANDS``)."""

import subprocess
import sys
from pathlib import Path

from django_elasticache_rs import _native

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "native_stubs.py"


def test_the_stub_of_every_command_is_generated_from_its_declaration():
    checked = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_every_command_has_a_blocking_method_and_an_operation():
    for name, _params, _returns, _doc in _native._COMMANDS:
        assert callable(getattr(_native.Client, name))
        assert callable(getattr(_native.Client, f"start_{name}"))
