"""System checks (``manage.py check``) of caches using the backend: each risky but valid
setting gets its warning id, a refused one an error, a sound configuration nothing."""

from __future__ import annotations

import ssl
import subprocess
import sys
from typing import Any

import pytest
from django.test import override_settings

from django_elasticache_rs.checks import check_caches

BACKEND = "django_elasticache_rs.backend.ElastiCache"


def ids(options: dict[str, Any], location: Any = "10.0.0.1:11211", **extra: Any) -> list[str]:
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": location, "OPTIONS": options}}
    with override_settings(CACHES=caches, **extra):
        return sorted(message.id or "" for message in check_caches())


def test_a_sound_configuration_has_nothing_to_say() -> None:
    assert ids({}) == []
    assert ids({"timeout": 0.5, "tls": True, "ignore_exc": True}) == []
    other = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(CACHES=other):
        assert check_caches() == []


@pytest.mark.parametrize("option", ["timeout", "connect_timeout"])
def test_no_deadline_is_w001(option: str) -> None:
    assert ids({option: None}) == ["django_elasticache_rs.W001"]


def test_tls_without_verification_is_w002() -> None:
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    assert ids({"tls_context": unverified}) == ["django_elasticache_rs.W002"]
    no_hostname = ssl.create_default_context()
    no_hostname.check_hostname = False
    assert ids({"tls_context": no_hostname}) == ["django_elasticache_rs.W002"]
    assert ids({"tls_context": ssl.create_default_context()}) == []


@pytest.mark.parametrize(
    ("arguments", "pool", "warned"),
    [
        ("--threads 8", 4, True),
        ("--threads=8", 8, False),
        # gevent: connections are bounded by greenlets in a call at once, not by
        # --worker-connections (README's own command must not warn).
        ("-k gevent --worker-connections 1000", 64, False),
        ("--worker-class=gevent --worker-connections=50 --threads 100", 64, False),
        ("--workers 4", 1, False),  # no concurrency said: nothing to compare with
        ("--threads 'unclosed", 1, False),
    ],
)
def test_a_pool_smaller_than_gunicorn_concurrency_is_w003(
    arguments: str, pool: int, warned: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", arguments)
    found = ids({"max_pool_size": pool})
    assert found == (["django_elasticache_rs.W003"] if warned else [])


def test_discovery_more_often_than_a_second_is_w004() -> None:
    assert ids({"discovery_interval": 0.5}) == ["django_elasticache_rs.W004"]
    assert ids({"discovery_interval": 1}) == []
    # Several nodes: no discovery, so no interval to worry about.
    assert ids({"discovery_interval": 0.5}, ["10.0.0.1:11211", "10.0.0.2:11211"]) == []


@pytest.mark.parametrize(
    "engine",
    ["django.contrib.sessions.backends.cache", "django.contrib.sessions.backends.cached_db"],
)
def test_sessions_in_the_cache_without_ignore_exc_are_w005(engine: str) -> None:
    assert ids({}, SESSION_ENGINE=engine) == ["django_elasticache_rs.W005"]
    assert ids({"ignore_exc": True}, SESSION_ENGINE=engine) == []
    assert ids({}, SESSION_ENGINE=engine, SESSION_CACHE_ALIAS="other") == []
    assert ids({}, SESSION_ENGINE="django.contrib.sessions.backends.db") == []


def test_a_refused_configuration_is_e001_naming_the_option() -> None:
    caches = {"default": {"BACKEND": BACKEND, "LOCATION": "x:1", "OPTIONS": {"timeuot": 1}}}
    with override_settings(CACHES=caches):
        [message] = check_caches()
    assert message.id == "django_elasticache_rs.E001"
    assert "timeout" in message.msg


APP_SCRIPT = """
import django
from django.conf import settings
settings.configure(
    INSTALLED_APPS=["django_elasticache_rs"],
    CACHES={"default": {"BACKEND": THE_BACKEND, "LOCATION": "x:1", "OPTIONS": {"timeout": None}}},
)
django.setup()
from django.core import checks
print(",".join(sorted(m.id for m in checks.run_checks(tags=[checks.Tags.caches]))))
""".replace("THE_BACKEND", repr(BACKEND))


def test_the_app_registers_the_checks_with_django() -> None:
    # A fresh interpreter: this module's import of the checks must not be what registers them.
    run = subprocess.run(
        [sys.executable, "-c", APP_SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "django_elasticache_rs.W001"


def test_millisecond_looking_timeouts_are_w007() -> None:
    assert ids({"timeout": 500}) == ["django_elasticache_rs.W007"]
    assert ids({"connect_timeout": 100, "timeout": 0.5}) == ["django_elasticache_rs.W007"]
    assert ids({"timeout": 99.5, "connect_timeout": 30}) == []


def test_django_elastipymemcache_2x_options_without_ignore_exc_are_w006() -> None:
    assert ids({"ignore_cluster_errors": True}) == ["django_elasticache_rs.W006"]
    assert ids({"cluster_timeout": 2}) == ["django_elasticache_rs.W006"]
    # ignore_exc said either way: the difference is seen to.
    assert ids({"cluster_timeout": 2, "ignore_exc": True}) == []
    assert ids({"ignore_cluster_errors": False, "ignore_exc": False}) == []
    # django-elasticache's spelling: pylibmc never swallowed errors, nothing to warn about.
    assert ids({"IGNORE_CLUSTER_ERRORS": True}) == []


PROJECT_SETTINGS = """
SECRET_KEY = "checks"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_elasticache_rs"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
STATIC_ROOT = "/tmp/static"
ALLOWED_HOSTS = ["127.0.0.1"]
CACHES = {"default": {"BACKEND": THE_BACKEND, "LOCATION": "10.0.0.1:11211", "OPTIONS": THE_OPTIONS}}
"""


def manage(tmp_path: Any, options: dict[str, Any], *command: str) -> subprocess.CompletedProcess:
    """``python -m django COMMAND`` in a fresh interpreter, on a project whose one cache is
    ours with ``options``."""
    settings = PROJECT_SETTINGS.replace("THE_BACKEND", repr(BACKEND)).replace(
        "THE_OPTIONS", repr(options)
    )
    (tmp_path / "project_settings.py").write_text(settings)
    return subprocess.run(
        [sys.executable, "-m", "django", *command, "--settings=project_settings"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )


@pytest.mark.parametrize(
    "command",
    [
        ("check",),
        ("check", "--deploy"),
        ("migrate",),
        # The checks fail it before it listens (port 0: never one that is taken).
        ("runserver", "--noreload", "127.0.0.1:0"),
    ],
)
def test_a_refused_option_is_one_line_in_manage_py_not_a_traceback(
    tmp_path: Any, command: tuple[str, ...]
) -> None:
    run = manage(tmp_path, {"timeuot": 1}, *command)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr
    [line] = [line for line in run.stderr.splitlines() if "django_elasticache_rs.E001" in line]
    assert "'timeuot'" in line and "did you mean 'timeout'" in line


def test_warnings_reach_manage_py_check(tmp_path: Any) -> None:
    run = manage(tmp_path, {"timeout": 500, "ignore_cluster_errors": True}, "check")
    assert run.returncode == 0, run.stderr
    assert "django_elasticache_rs.W006" in run.stderr
    assert "django_elasticache_rs.W007" in run.stderr
