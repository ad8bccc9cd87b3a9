"""Runs django-ratelimit's and django-cachalot's own test suites against the backend on a local
cluster: the released sources (sdists from PyPI, fetched with ``pip download``), their tests
unchanged, only ``CACHES`` pointing at ``django_elasticache_rs.backend.ElastiCache``.

    .venv/bin/python scripts/third_party_suites.py [--keep DIR] [ratelimit] [cachalot]

Prints each suite's pass count and exits non-zero if any test failed. Not part of
``scripts/test.sh``: it needs the network (PyPI) and a few minutes. The suites' own test-only
dependencies (pytz, beautifulsoup4, psycopg2-binary for cachalot) are installed into the work
directory, never into the environment.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from django_elasticache_rs.local import LocalCluster

RATELIMIT = "django-ratelimit==4.1.0"
CACHALOT = "django-cachalot==2.9.1"
CACHALOT_DEPS = ["pytz", "beautifulsoup4", "psycopg2-binary"]
BACKEND = "django_elasticache_rs.backend.ElastiCache"

# django-ratelimit's sdist has no settings module: this is its repository's test_settings.py
# for 4.1.0, the caches ours. "connection-errors" is a host that cannot be resolved (as
# upstream); its redis twin (IGNORE_EXCEPTIONS) is ours with ignore_exc. Upstream's
# "connection-errors" is python-memcached, which swallows every error; PyMemcacheCache passes
# its tests because, for `retry_timeout` after a failure, pymemcache answers the default
# without raising. Ours raises (ignore_exc False) unless --ignore-exc is given.
RATELIMIT_SETTINGS = """
import os
ENDPOINT = os.environ["THIRD_PARTY_ENDPOINT"]
SECRET_KEY = "ratelimit"
RATELIMIT_USE_CACHE = "default"
CACHES = {{
    "default": {{"BACKEND": "{backend}", "LOCATION": ENDPOINT}},
    "connection-errors": {{
        "BACKEND": "{backend}",
        "LOCATION": "test-connection-errors",
        "OPTIONS": {{"ignore_exc": {ignore_exc}}},
    }},
    "connection-errors-redis": {{
        "BACKEND": "{backend}",
        "LOCATION": "test-connection-errors",
        "OPTIONS": {{"ignore_exc": True}},
    }},
    "instant-expiration": {{
        "BACKEND": "django.core.cache.backends.dummy.DummyCache",
        "LOCATION": "test-instant-expiration",
    }},
}}
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}}}
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.sites",
    "django.contrib.messages",
    "django.contrib.admin",
    "django_ratelimit",
]
TEMPLATES = [{{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {{"context_processors": [
        "django.template.context_processors.debug",
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]}},
}}]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "third_party_urls"
USE_TZ = True
"""

# django-cachalot's own settings.py with its memcached cache ours (CACHE_BACKEND=memcached).
CACHALOT_SETTINGS = """
import os
from settings import *  # noqa: F401,F403 (cachalot's own)
CACHES["default"] = {{"BACKEND": "{backend}", "LOCATION": os.environ["THIRD_PARTY_ENDPOINT"]}}
# No Redis or other memcached here: the caches that need one go (the in-process ones stay).
for alias in ("redis", "builtin_redis", "pylibmc", "memcached"):
    CACHES.pop(alias, None)
# SQLite only: no PostgreSQL or MySQL server here (their tests are skipped without the alias);
# a second SQLite database for the tests that need two.
DATABASES = {{
    "default": DATABASES["default"],
    "sqlite-2": {{
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": "cachalot-2.sqlite3",
        "TEST": {{"NAME": "test_cachalot-2.sqlite3"}},
    }},
}}
"""


def _sdist(requirement: str, into: Path) -> Path:
    """The unpacked source distribution of ``requirement``."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            requirement,
            "-d",
            str(into),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    name, version = requirement.split("==")
    archive = next(
        path
        for path in into.glob("*.tar.gz")
        if path.name.lower().replace("_", "-").startswith(f"{name}-{version}".lower())
    )
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / archive.name.removesuffix(".tar.gz")


def _counts(output: str) -> tuple[int, int]:
    """(passed, ran) from unittest's summary; skipped tests are neither."""
    ran_match = re.search(r"^Ran (\d+) tests?", output, re.MULTILINE)
    ran = int(ran_match.group(1)) if ran_match else 0
    failed = 0
    result = re.search(r"^FAILED \((.*)\)$", output, re.MULTILINE)
    if result:
        for part in result.group(1).split(", "):
            kind, _, number = part.partition("=")
            if kind in ("failures", "errors"):
                failed += int(number)
    skipped = re.search(r"skipped=(\d+)", output)
    skips = int(skipped.group(1)) if skipped else 0
    return ran - failed - skips, ran - skips


def _run(name: str, command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, int]:
    completed = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    output = completed.stdout + completed.stderr
    passed, ran = _counts(output)
    print(f"{name}: {passed}/{ran} passed")
    if passed != ran or completed.returncode != 0:
        print(output[-6000:])
    return passed, ran


IGNORE_EXC = [False]


def ratelimit(work: Path, env: dict[str, str]) -> tuple[int, int]:
    source = _sdist(RATELIMIT, work)
    (source / "third_party_settings.py").write_text(
        RATELIMIT_SETTINGS.format(backend=BACKEND, ignore_exc=IGNORE_EXC[0])
    )
    (source / "third_party_urls.py").write_text("urlpatterns = []\n")
    env = {**env, "DJANGO_SETTINGS_MODULE": "third_party_settings", "PYTHONPATH": str(source)}
    command = [sys.executable, "-m", "django", "test", "django_ratelimit.tests", "-v", "2"]
    return _run("django-ratelimit 4.1.0", command, source, env)


def cachalot(work: Path, env: dict[str, str]) -> tuple[int, int]:
    source = _sdist(CACHALOT, work)
    deps = work / "cachalot-deps"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(deps), *CACHALOT_DEPS],
        check=True,
    )
    (source / "third_party_settings.py").write_text(CACHALOT_SETTINGS.format(backend=BACKEND))
    # runtests.py takes its settings from the environment (setdefault).
    env = {
        **env,
        "DJANGO_SETTINGS_MODULE": "third_party_settings",
        "CACHE_BACKEND": "memcached",
        "DB_ENGINE": "sqlite3",
        "PYTHONPATH": os.pathsep.join([str(source), str(deps)]),
    }
    return _run("django-cachalot 2.9.1", [sys.executable, "runtests.py"], source, env)


SUITES = {"ratelimit": ratelimit, "cachalot": cachalot}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help="ratelimit, cachalot (default: both)")
    parser.add_argument(
        "--ignore-exc",
        action="store_true",
        help="ratelimit's unreachable cache with ignore_exc (as upstream's python-memcached)",
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()
    IGNORE_EXC[0] = args.ignore_exc
    with tempfile.TemporaryDirectory(prefix="third-party-") as scratch:
        work = args.keep or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        with LocalCluster(3) as cluster:
            env = {**os.environ, "THIRD_PARTY_ENDPOINT": cluster.configuration_endpoint}
            results = {name: SUITES[name](work, env) for name in args.suites or SUITES}
    return 0 if all(passed == ran > 0 for passed, ran in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
