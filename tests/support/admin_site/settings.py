"""Settings of the admin test site (see the package's docstring)."""

import json
import os

SITE = json.loads(os.environ["ADMIN_SITE"])

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.support.admin_site.urls"
ADMIN_APPS = {
    "two-factor": "tests.support.admin_site.two_factor.TwoFactorAdminConfig",
    # The default admin site with the link to the status page (django_elasticache_rs.admin_site).
    "linked": "django_elasticache_rs.admin_site.ElastiCacheAdminConfig",
}
INSTALLED_APPS = [
    ADMIN_APPS.get(SITE.get("admin_site", ""), "django.contrib.admin"),
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_elasticache_rs",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": SITE["database"]}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"
USE_TZ = True
# Sessions in the database: the page under test reads the cache, it must not depend on it.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
CACHES = {
    "default": {
        "BACKEND": "django_elasticache_rs.backend.ElastiCache",
        "LOCATION": SITE["location"],
        # A frozen node must make the page say so soon, not wait out the default second. A
        # local tier the site's few reads never fill (ten a second make a key hot), for the
        # page to show.
        "OPTIONS": {"timeout": 0.5, "connect_timeout": 0.5, "local_cache": {}},
    }
}
