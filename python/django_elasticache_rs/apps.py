"""The Django app (``"django_elasticache_rs"`` in ``INSTALLED_APPS``): registers the system
checks of ``checks``, and brings ``manage.py elasticache`` and the admin status page's template
(``urls``). The cache backend itself works without it."""

from __future__ import annotations

from django.apps import AppConfig


class ElastiCacheConfig(AppConfig):
    name = "django_elasticache_rs"
    verbose_name = "ElastiCache (django-elasticache-rs)"

    def ready(self) -> None:
        # Imported for its @register: the checks run with `manage.py check` and at startup.
        from django_elasticache_rs import checks  # noqa: F401
