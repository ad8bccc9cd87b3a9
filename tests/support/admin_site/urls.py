"""The admin, with the status page under its prefix, as the README tells users to do."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/elasticache/", include("django_elasticache_rs.urls")),
    path("admin/", admin.site.urls),
]
