"""Django's own cache test suite, run against ``$DJANGO_SUITE_BACKEND`` on a real memcached.

The tests are Django's ``BaseMemcachedTests`` (which includes ``BaseCacheTests``) from
``tests/cache/tests.py`` of the sdist of the installed Django, fetched at collection time
(see ``tests/django_suite``).  The backend defaults to ours; run Django's reference
backend with::

    DJANGO_SUITE_BACKEND=django.core.cache.backends.memcached.PyMemcacheCache \
        .venv/bin/python -m pytest tests/test_django_cache_suite.py

Tests listed in ``tests/django_suite/excluded.py`` are reported as skipped with their
reason.  If the suite cannot be fetched, ``test_django_cache_suite_is_available`` fails
with the reason and the suite's tests are absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import TestCase

from django_elasticache_rs.local import LocalNode
from django_elasticache_rs.local.certs import make_certificates
from tests.django_suite import harness

# Django's timing tests sleep up to ~5 s and retry up to 3 times.
pytestmark = pytest.mark.timeout(90)

django_tests, unavailable = harness.load_suite()


def test_django_cache_suite_is_available() -> None:
    if unavailable is not None:
        pytest.fail(unavailable, pytrace=False)


if django_tests is not None:
    BaseMemcachedTests: Any = django_tests.BaseMemcachedTests  # fetched: no static type

    @harness.apply_exclusions
    class DjangoMemcachedSuite(
        harness.MemcachedSuiteMixin,
        BaseMemcachedTests,  # type: ignore[misc]
        TestCase,
    ):
        """Django's memcached tests, set up like its ``PyMemcacheCacheTests``."""

    @pytest.fixture(scope="module", autouse=True)
    def _suite_location(memcached: LocalNode) -> Iterator[None]:
        """Point the suite at the session's memcached (before the class is set up)."""
        DjangoMemcachedSuite.memcached_location = memcached.address
        yield
        DjangoMemcachedSuite.memcached_location = None

    def test_exclusions_are_current() -> None:
        assert django_tests is not None
        stale = harness.stale_exclusions(django_tests)
        assert not stale, f"tests/django_suite/excluded.py names unknown tests: {stale}"


if django_tests is not None and harness.backend_path() == harness.DEFAULT_BACKEND:
    # TLS options are our backend's: another backend runs the plaintext suite only.

    @harness.apply_exclusions
    class DjangoMemcachedSuiteOverTls(
        harness.MemcachedSuiteMixin,
        BaseMemcachedTests,  # type: ignore[misc]
        TestCase,
    ):
        """The same tests over TLS: a memcached started with -Z, its certificate naming
        ``localhost`` and signed by a CA made for the test."""

    @pytest.fixture(scope="module", autouse=True)
    def _tls_suite_location(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        certificates = make_certificates(tmp_path_factory.mktemp("tls"))
        with LocalNode(tls=certificates) as node:
            DjangoMemcachedSuiteOverTls.memcached_location = f"localhost:{node.port}"
            DjangoMemcachedSuiteOverTls.memcached_options = {
                "tls_ca_file": str(certificates.ca_cert)
            }
            yield
        DjangoMemcachedSuiteOverTls.memcached_location = None
