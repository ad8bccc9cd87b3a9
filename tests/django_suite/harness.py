"""Glue that runs Django's ``BaseMemcachedTests`` against a configurable cache backend.

The backend under test is ``$DJANGO_SUITE_BACKEND`` (a dotted path; default
``DEFAULT_BACKEND``, our ElastiCache backend).  Its ``LOCATION`` is the single node
``"127.0.0.1:<port>"`` of the memcached server the ``memcached`` fixture started; the
test module binds it to the test case class before the class is set up.

Django's test package is made importable as the top-level package ``cache`` and
registered as the Django app ``cache`` *at collection time* (its models, e.g. ``Poll``,
need an installed app, and pytest-django creates the test database, via migrate's
``run_syncdb``, only after collection).  Registering it here rather than listing it in
``tests/settings.py`` keeps the settings importable, and every other test runnable, when
the suite cannot be fetched.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar

from django.test.utils import override_settings
from django.utils.module_loading import import_string

from .excluded import EXCLUDED
from .fetch import SuiteFetchError, ensure_django_cache_tests

BACKEND_ENV = "DJANGO_SUITE_BACKEND"
DEFAULT_BACKEND = "django_elasticache_rs.backend.ElastiCache"

# test_incr/test_decr expect this exception when incr()/decr() hit a non-integer value
# (Django's concrete test classes override ``incr_decr_type_error`` the same way).
# Backends not listed get BaseCacheTests' default, TypeError; override with the env var.
INCR_DECR_ERROR_ENV = "DJANGO_SUITE_INCR_DECR_ERROR"
INCR_DECR_TYPE_ERRORS: dict[str, str] = {
    "django.core.cache.backends.memcached.PyMemcacheCache": (
        "pymemcache.exceptions.MemcacheClientError"
    ),
    "django.core.cache.backends.memcached.PyLibMCCache": "pylibmc.ClientError",
    # Ours raises its CacheClientError for memcached's CLIENT_ERROR "cannot increment or
    # decrement non-numeric value", as pymemcache raises MemcacheClientError.
    "django_elasticache_rs.backend.ElastiCache": (
        "django_elasticache_rs.exceptions.CacheClientError"
    ),
}
DEFAULT_INCR_DECR_TYPE_ERROR = "builtins.TypeError"

APP_LABEL = "cache"


def backend_path() -> str:
    """Dotted path of the cache backend under test."""
    return os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND


def incr_decr_type_error(backend: str) -> type[BaseException]:
    dotted = os.environ.get(INCR_DECR_ERROR_ENV) or INCR_DECR_TYPE_ERRORS.get(
        backend, DEFAULT_INCR_DECR_TYPE_ERROR
    )
    error: type[BaseException] = import_string(dotted)
    return error


def load_django_cache_tests() -> ModuleType:
    """Fetch Django's ``tests/cache``, install it as the app ``cache``, return ``cache.tests``."""
    root = ensure_django_cache_tests()
    install_cache_app(root)
    return importlib.import_module(f"{APP_LABEL}.tests")


def load_suite() -> tuple[ModuleType | None, str | None]:
    """``(cache.tests module, None)``, or ``(None, why not)`` if it cannot be loaded."""
    try:
        return load_django_cache_tests(), None
    except SuiteFetchError as exc:
        return None, f"Django's cache test suite is unavailable: {exc}"
    except Exception:
        return None, "loading Django's cache test suite failed:\n" + traceback.format_exc()


def install_cache_app(root: Path) -> None:
    """Put ``root`` (holding the ``cache`` package) on sys.path and install app ``cache``."""
    from django.apps import apps
    from django.conf import settings

    path = str(root)
    if path not in sys.path:
        sys.path.insert(0, path)
    package = importlib.import_module(APP_LABEL)
    location = Path(package.__file__ or "").resolve()
    if not location.is_relative_to(root.resolve()):
        raise RuntimeError(
            f"a different top-level package 'cache' is already importable ({location}); "
            f"Django's test package in {root} cannot be installed under that name"
        )
    if not apps.is_installed(APP_LABEL):
        # The same mechanism override_settings(INSTALLED_APPS=...) uses; left enabled for
        # the rest of the session so the test database gets the app's tables.
        override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, APP_LABEL]).enable()


class MemcachedSuiteMixin:
    """Put first in the bases of a ``BaseMemcachedTests`` + ``TestCase`` class.

    Does what Django's ``PyMemcacheCacheTests`` does with its class decorator
    ``override_settings(CACHES=caches_setting_for_tests(base=..., exclude=...))`` and
    ``base_params``, but at ``setUpClass`` time, when the memcached port is known.
    """

    memcached_location: ClassVar[str | None] = None
    memcached_options: ClassVar[dict[str, Any]] = {}
    backend: ClassVar[str]
    base_params: ClassVar[dict[str, Any]]

    @classmethod
    def setUpClass(cls) -> None:
        if cls.memcached_location is None:
            raise RuntimeError(
                f"{cls.__name__}.memcached_location is not set: run it through pytest "
                "(tests/test_django_cache_suite.py binds it from the memcached fixture)"
            )
        django_tests = importlib.import_module(f"{APP_LABEL}.tests")
        cls.backend = backend_path()
        cls.base_params = {"BACKEND": cls.backend, "LOCATION": cls.memcached_location}
        if cls.memcached_options:
            cls.base_params["OPTIONS"] = cls.memcached_options
        caches = django_tests.caches_setting_for_tests(
            base=cls.base_params, exclude=django_tests.memcached_excluded_caches
        )
        overridden = override_settings(CACHES=caches)
        overridden.enable()
        cls.addClassCleanup(overridden.disable)  # type: ignore[attr-defined]
        super().setUpClass()  # type: ignore[misc]

    @property
    def incr_decr_type_error(self) -> type[BaseException]:
        return incr_decr_type_error(self.backend)

    def test_close_generic(self) -> None:
        """BaseCacheTests.test_close, shadowed in BaseMemcachedTests by an excluded test."""
        django_tests = importlib.import_module(f"{APP_LABEL}.tests")
        django_tests.BaseCacheTests.test_close(self)


_T = TypeVar("_T", bound=type)


def apply_exclusions(cls: _T, excluded: dict[str, str] | None = None) -> _T:
    """Replace each excluded test method of ``cls`` by a skip that states the reason."""
    for name, reason in (EXCLUDED if excluded is None else excluded).items():
        if callable(getattr(cls, name, None)):
            setattr(cls, name, _skipped(name, reason))
    return cls


def _skipped(name: str, reason: str) -> Any:
    @unittest.skip(f"excluded (tests/django_suite/excluded.py): {reason}")
    def skipped(self: object) -> None:
        raise AssertionError("unreachable")

    skipped.__name__ = skipped.__qualname__ = name
    return skipped


def stale_exclusions(django_tests: ModuleType) -> list[str]:
    """Names in ``EXCLUDED`` that the fetched ``BaseMemcachedTests`` does not define."""
    base = django_tests.BaseMemcachedTests
    return [name for name in EXCLUDED if not callable(getattr(base, name, None))]
