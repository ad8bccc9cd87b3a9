"""Serves the admin test site: creates its database and users, gives the cache some traffic
for the client's counters to show (one key set, read twice, one miss), prints the port it
listens on, then serves (threads, static files included) until killed."""

from __future__ import annotations

import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.support.admin_site.settings"

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.staticfiles.handlers import StaticFilesHandler  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402


class ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    call_command("migrate", verbosity=0)
    users = settings.SITE["users"]
    User.objects.create_user(users["staff"], password=users["password"], is_staff=True)
    User.objects.create_user(users["visitor"], password=users["password"])
    cache.set("greeting", "hello")
    assert cache.get("greeting") == cache.get("greeting") == "hello"
    assert cache.get("absent") is None
    server = make_server(
        "127.0.0.1",
        0,
        StaticFilesHandler(get_wsgi_application()),
        server_class=ThreadingServer,
        handler_class=QuietHandler,
    )
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
