"""What is generated from the commands' declarations is up to date (``scripts/generate.py``):
the commands' part of ``_native.pyi`` (from ``_native._COMMANDS``) and the backend's async
twins (from its ``@command`` methods)."""

import inspect
import subprocess
import sys
from pathlib import Path

from django_elasticache_rs import _native
from django_elasticache_rs.backend import ElastiCache

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "generate.py"


def test_the_stubs_and_the_async_twins_are_generated_from_the_declarations():
    checked = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_every_native_command_has_a_blocking_method_and_an_operation():
    for name, _params, _returns, _doc in _native._COMMANDS:
        assert callable(getattr(_native.Client, name))
        assert callable(getattr(_native.Client, f"start_{name}"))


def test_every_declared_cache_method_has_its_async_twin():
    for name, _operation, _keys in ElastiCache.COMMANDS:
        assert inspect.iscoroutinefunction(vars(ElastiCache)[f"a{name}"])
