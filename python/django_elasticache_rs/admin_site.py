"""A link to the ElastiCache status page in the admin's index and sidebar, without overriding
any template: the admin lists it as an app of its own ("ElastiCache", with "Status").

Either replace ``"django.contrib.admin"`` in ``INSTALLED_APPS`` with
``"django_elasticache_rs.admin_site.ElastiCacheAdminConfig"`` (the default admin site, with the
link), or mix :class:`ElastiCacheAdminSiteMixin` into an ``AdminSite`` of your own::

    class MyAdminSite(ElastiCacheAdminSiteMixin, admin.AdminSite): ...

The link appears once the page's URLs are included (``django_elasticache_rs.urls``), for those
the site lets into it.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

__all__ = ["ElastiCacheAdminConfig", "ElastiCacheAdminSite", "ElastiCacheAdminSiteMixin"]

#: The app label of the entry: not an installed app's, so it cannot clash with one.
APP_LABEL = "django_elasticache_rs_status"


def status_entry() -> dict[str, Any] | None:
    """The app-list entry of the status page, as the admin's templates read one (``None`` when
    its URLs are not included)."""
    try:
        url = reverse("django_elasticache_rs:status")
    except NoReverseMatch:
        return None
    return {
        "name": "ElastiCache",
        "app_label": APP_LABEL,
        "app_url": url,
        "has_module_perms": True,
        "models": [
            {
                "name": "Status",
                "object_name": "Status",
                "admin_url": url,
                "add_url": None,
                "view_only": True,
                "perms": {"add": False, "change": False, "delete": False, "view": True},
            }
        ],
    }


class ElastiCacheAdminSiteMixin:
    """Adds the status page to the admin's app list (its index page and its sidebar), for
    those the site lets in."""

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[Any]:
        app_list: list[Any] = super().get_app_list(request, app_label)  # type: ignore[misc]
        if app_label not in (None, APP_LABEL):
            return app_list
        entry = status_entry()
        if entry is None or not self.has_permission(request):  # type: ignore[attr-defined]
            return app_list
        return sorted([*app_list, entry], key=lambda app: str(app["name"]).lower())


class ElastiCacheAdminSite(ElastiCacheAdminSiteMixin, admin.AdminSite):
    """Django's ``AdminSite`` with the link to the status page."""


class ElastiCacheAdminConfig(AdminConfig):
    """``django.contrib.admin`` whose default site is :class:`ElastiCacheAdminSite`."""

    default_site = "django_elasticache_rs.admin_site.ElastiCacheAdminSite"
