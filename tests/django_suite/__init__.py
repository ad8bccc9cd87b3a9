"""Run Django's own cache test suite (``tests/cache`` of Django's sdist) against a backend.

* ``fetch``    - downloads the Django sdist matching the installed Django and extracts
                 its ``tests/cache`` package into ``.cache/django-tests/<version>/``.
* ``harness``  - makes that package importable as the Django app ``cache`` and builds
                 the ``BaseMemcachedTests`` test case for the backend under test.
* ``excluded`` - the tests we deliberately do not run, each with its reason.

The entry point collected by pytest is ``tests/test_django_cache_suite.py``.
"""
