"""Tests of Django's suite that the harness does not run, each with the reason why.

``EXCLUDED`` is applied by ``tests/django_suite/harness.py``: each named test method of
``BaseMemcachedTests``/``BaseCacheTests`` is replaced by a skip carrying the reason, so it
shows up as "skipped" with that text in the pytest report.  Only tests that inspect or
mock the internals of Django's pymemcache/pylibmc-based backends (``cache._class``,
``cache._cache``, ``cache._lib``, client options) belong here; every test of cache
*behaviour* must run.  (``test_location_multiple_servers`` reads ``cache._servers`` but
runs: it checks LOCATION parsing, and our backend keeps Django's ``_servers`` meaning.)
``test_exclusions_are_current`` fails if a name here no longer exists in the fetched
suite (e.g. after a Django upgrade).

``NOT_INHERITED`` documents tests that Django defines only on its concrete
``PyMemcacheCacheTests``/``PyLibMCCacheTests`` classes.  The harness builds its test case
from ``BaseMemcachedTests`` (like those classes do), so these never run; they are listed
so nobody wonders where they went.  Tests that Django itself skips for every memcached
backend (``test_cull``, ``test_zero_cull``, ``test_cull_delete_when_store_empty``: the
"cull" caches are excluded by ``memcached_excluded_caches``) are not listed: they skip
on their own with Django's message.
"""

from __future__ import annotations

EXCLUDED: dict[str, str] = {
    "test_close": (
        "BaseMemcachedTests.test_close patches cache._class.disconnect_all (the client "
        "class of Django's BaseMemcachedCache) and asserts that request_finished calls it; "
        "that is a contract of Django's client wrapper, not of cache behaviour. The "
        "generic BaseCacheTests.test_close (close() exists and works) still runs, as "
        "test_close_generic."
    ),
    "test_set_many_returns_failing_keys": (
        "patches cache._class.set_multi (the pymemcache/pylibmc client method that "
        "BaseMemcachedCache.set_many delegates to) to fake failing keys; a backend with "
        "its own client has no such method to patch."
    ),
}

NOT_INHERITED: dict[str, str] = {
    "PyMemcacheCacheTests.test_pymemcache_highest_pickle_version": (
        "reads cache._cache.default_kwargs['serde'] and each pymemcache client's serde "
        "pickle_version: pymemcache internals."
    ),
    "PyMemcacheCacheTests.test_pymemcache_options": (
        "reads cache._cache.default_kwargs['no_delay']: pymemcache client options."
    ),
    "PyLibMCCacheTests.test_pylibmc_options": "reads pylibmc client behaviors.",
    "PyLibMCCacheTests.test_pylibmc_client_servers": "reads PyLibMCCache.client_servers.",
}
