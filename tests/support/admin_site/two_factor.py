"""A hardened admin site, as a two-factor admin (django-otp's ``OTPAdminSite``) makes one: its
``has_permission`` refuses a staff user who has not given a second factor, which no user of the
test site ever gives. The settings put it in place as the default site (``ADMIN_SITE``'s
``"admin_site": "two-factor"``), as such packages tell users to."""

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest


class TwoFactorAdminSite(admin.AdminSite):
    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and request.session.get("second_factor") is True


class TwoFactorAdminConfig(AdminConfig):
    default_site = "tests.support.admin_site.two_factor.TwoFactorAdminSite"
