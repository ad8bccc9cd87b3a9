"""System checks (``manage.py check``) for caches using the backend: settings that are valid
but risky in production, each a warning with its own id.

* ``django_elasticache_rs.W001``: no deadline (``timeout`` or ``connect_timeout`` is ``None``):
  a node that stops answering holds the calling worker for as long as the OS lets it.
* ``django_elasticache_rs.W002``: TLS without certificate or hostname verification.
* ``django_elasticache_rs.W003``: ``max_pool_size`` below the threads gunicorn runs per worker
  (``--threads``, read from ``GUNICORN_CMD_ARGS``: ``manage.py check`` cannot see gunicorn's
  command line): every thread can be in a cache call at once, so calls would wait for a pooled
  connection under load. Not for the gevent worker: a call holds a connection only for its
  exchange, so connections per node are bounded by the greenlets in a call to that node at the
  same moment, not by ``--worker-connections`` (a greenlet that finds the pool in use waits on
  the hub, taking no thread); the default 64 covers that unless ``pool_waits`` grows.
* ``django_elasticache_rs.W004``: ``discovery_interval`` under a second: the configuration
  endpoint is asked more often than membership can change.
* ``django_elasticache_rs.W005``: sessions in this cache (``SESSION_ENGINE`` ``cache`` or
  ``cached_db``) with ``ignore_exc`` off: a cache outage fails every request with a session.
* ``django_elasticache_rs.W006``: options of django-elastipymemcache 1.x/2.x
  (``cluster_timeout``, ``ignore_cluster_errors``) without ``ignore_exc``: those releases
  defaulted ``ignore_exc`` to ``True``, this backend to ``False``, so a node failure that read
  as a miss now raises. Also says that those options have no effect here.
* ``django_elasticache_rs.W007``: ``timeout`` or ``connect_timeout`` of 100 or more: seconds
  here, so it probably meant milliseconds (pylibmc's unit).
* ``django_elasticache_rs.E001``: ``OPTIONS`` or ``LOCATION`` the backend refuses (the same
  message Django would raise at the first use of the cache).

Django's own cache checks build every cache (to look for file-based ones), so a refused
configuration would end ``manage.py check``, ``runserver`` and ``migrate`` in a traceback before
E001 is shown: they are wrapped here so that, when a cache of ours is refused, they leave it to
E001 (one line naming the option).
"""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.checks import caches as django_cache_checks
from django.core.checks.registry import registry
from django.core.exceptions import ImproperlyConfigured

from django_elasticache_rs.options import (
    ELASTIPYMEMCACHE_2X,
    LEGACY,
    parse_location,
    parse_options,
)

BACKEND = "django_elasticache_rs.backend.ElastiCache"
_SESSION_ENGINES = (
    "django.contrib.sessions.backends.cache",
    "django.contrib.sessions.backends.cached_db",
)


def _gunicorn_concurrency() -> int | None:
    """Threads per gunicorn worker, from ``GUNICORN_CMD_ARGS`` if it says; ``None`` for the
    gevent worker, whose pool needs are not its ``--worker-connections`` (see W003)."""
    try:
        args = shlex.split(os.environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        return None
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in ("--threads", "--worker-connections", "-k", "--worker-class"):
            if not value and i + 1 < len(args):
                value = args[i + 1]
            values[name] = value
    worker = values.get("-k") or values.get("--worker-class") or ""
    if "gevent" in worker or "--threads" not in values:
        return None
    try:
        return int(values["--threads"])
    except ValueError:
        return None


#: A ``timeout`` this long (seconds) is more likely milliseconds.
_MILLISECONDS_LIKE = 100


def _migration(obj: str, options: dict[str, Any]) -> list[CheckMessage]:
    """W006 when django-elastipymemcache 1.x/2.x options are present without ``ignore_exc``."""
    legacy = sorted(name for name in options if name in ELASTIPYMEMCACHE_2X)
    if not legacy or "ignore_exc" in options:
        return []
    effects = "; ".join(f"{name}: {LEGACY[name]}" for name in legacy)
    return [
        Warning(
            f"{', '.join(legacy)}: django-elastipymemcache 1.x/2.x settings, and ignore_exc "
            "is not set: those releases defaulted it to True, this backend to False",
            hint="A node failure that read as a miss now raises (HTTP 500). Set "
            "OPTIONS['ignore_exc'] to True to keep 2.x's behaviour (or False to confirm). "
            f"No effect here: {effects}.",
            obj=obj,
            id="django_elasticache_rs.W006",
        )
    ]


def _check(alias: str, config: dict[str, Any]) -> list[CheckMessage]:
    obj = f"CACHES[{alias!r}]"
    try:
        servers = parse_location(config.get("LOCATION"))
        native = dict(parse_options(config.get("OPTIONS"), servers).native)
    except ImproperlyConfigured as error:
        return [Error(str(error), obj=obj, id="django_elasticache_rs.E001")]
    found = _migration(obj, config.get("OPTIONS") or {})
    unbounded = [name for name in ("timeout", "connect_timeout") if native.get(name) is None]
    if unbounded:
        found.append(
            Warning(
                f"{' and '.join(unbounded)} set to None: no deadline",
                hint="A node that stops answering then holds the calling worker for as long "
                "as the OS lets it. Give a number of seconds (the default is 1).",
                obj=obj,
                id="django_elasticache_rs.W001",
            )
        )
    if native.get("tls") and not (
        native.get("tls_verify", True) and native.get("tls_check_hostname", True)
    ):
        found.append(
            Warning(
                "TLS without certificate or hostname verification",
                hint="Anyone on the path can pose as the cluster. Verify against the "
                "system's trust store or tls_ca_file, and the nodes' hostnames.",
                obj=obj,
                id="django_elasticache_rs.W002",
            )
        )
    concurrency = _gunicorn_concurrency()
    if concurrency is not None and native.get("max_pool_size", 64) < concurrency:
        found.append(
            Warning(
                f"max_pool_size {native.get('max_pool_size')} is below the {concurrency} "
                "threads gunicorn runs per worker (GUNICORN_CMD_ARGS --threads)",
                hint="Every thread can be in a cache call at once: under load, calls wait up "
                "to `timeout` for a pooled connection. Raise max_pool_size to --threads.",
                obj=obj,
                id="django_elasticache_rs.W003",
            )
        )
    interval = native.get("discovery_interval")
    if native.get("discovery") != "off" and interval is not None and interval < 1:
        found.append(
            Warning(
                f"discovery_interval {interval} s is under a second",
                hint="Membership changes in minutes; every process asks the configuration "
                "endpoint this often. 60 s is the default; failures trigger an early look.",
                obj=obj,
                id="django_elasticache_rs.W004",
            )
        )
    slow = [
        f"{name} {native[name]}"
        for name in ("timeout", "connect_timeout")
        if native.get(name) is not None and native[name] >= _MILLISECONDS_LIKE
    ]
    if slow:
        found.append(
            Warning(
                f"{' and '.join(slow)} seconds: milliseconds meant?",
                hint="timeout and connect_timeout are seconds (pylibmc's are milliseconds): "
                "0.5 is half a second. The default is 1.",
                obj=obj,
                id="django_elasticache_rs.W007",
            )
        )
    session_alias = getattr(settings, "SESSION_CACHE_ALIAS", "default")
    engine = getattr(settings, "SESSION_ENGINE", "")
    if engine in _SESSION_ENGINES and session_alias == alias and not native.get("ignore_exc"):
        found.append(
            Warning(
                "sessions are kept in this cache and ignore_exc is off",
                hint="A cache outage then fails every request that reads the session. Set "
                "OPTIONS['ignore_exc'] to True (a failure reads as no session), or keep "
                "sessions in the database.",
                obj=obj,
                id="django_elasticache_rs.W005",
            )
        )
    return found


@register(Tags.caches)
def check_caches(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every cache using the backend, checked (see the module's docstring)."""
    found: list[CheckMessage] = []
    for alias, config in getattr(settings, "CACHES", {}).items():
        if isinstance(config, dict) and config.get("BACKEND") == BACKEND:
            found.extend(_check(alias, config))
    return found


def _refused_here() -> bool:
    """Whether some cache using the backend has a configuration it refuses (E001)."""
    return any(message.id == "django_elasticache_rs.E001" for message in check_caches(None))


def _leaving_refused_to_e001(check: Callable[..., Any]) -> Callable[..., Any]:
    """``check`` (one of Django's, which builds every cache), returning nothing instead of
    raising when one of ours is refused: E001 says which option, in one line."""

    @functools.wraps(check)  # keeps the tags register() set on it
    def wrapped(app_configs: Any = None, **kwargs: Any) -> Any:
        try:
            return check(app_configs, **kwargs)
        except ImproperlyConfigured:
            if _refused_here():
                return []
            raise

    return wrapped


def _wrap_djangos_cache_checks() -> None:
    builds_caches = {
        django_cache_checks.check_cache_location_not_exposed,
        django_cache_checks.check_file_based_cache_is_absolute,
    }
    for checks in (registry.registered_checks, registry.deployment_checks):
        for check in builds_caches & checks:
            checks.discard(check)
            checks.add(_leaving_refused_to_e001(check))  # type: ignore[arg-type]  # tags kept


_wrap_djangos_cache_checks()
