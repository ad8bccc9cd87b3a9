"""Settings of the gevent test site (see the package's docstring)."""

import json
import os

SITE = json.loads(os.environ["GEVENT_SITE"])

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.support.gevent_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
CACHES = {
    "default": {
        "BACKEND": "django_elasticache_rs.backend.ElastiCache",
        "LOCATION": [SITE["healthy"], SITE["frozen"]],
        "KEY_PREFIX": SITE["key_prefix"],
        "OPTIONS": {"discovery": "off", "timeout": SITE["timeout"]},
    }
}
