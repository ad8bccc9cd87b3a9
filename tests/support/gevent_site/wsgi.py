"""The gevent test site's WSGI application (gunicorn's ``APP_MODULE``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.support.gevent_site.settings")
application = get_wsgi_application()
