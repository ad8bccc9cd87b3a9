"""URLs of the admin status page, for those the default admin site lets in (the view applies
its ``admin_view`` at each request and sends anyone else to the admin's login): include them
under the admin's prefix, before ``admin.site.urls``::

    path("admin/elasticache/", include("django_elasticache_rs.urls")),
    path("admin/", admin.site.urls),
"""

from __future__ import annotations

from django.urls import path

from django_elasticache_rs import views

app_name = "django_elasticache_rs"

urlpatterns = [
    path("", views.status, name="status"),
]
