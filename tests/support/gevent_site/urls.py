"""The gevent test site's views.

* ``/healthy``: reads the healthy node's keys, one ``get`` after another, and says how many
  frozen reads were in flight in this worker when it finished.
* ``/frozen``: reads the frozen node's key; says how that ended.
* ``/status``: how many frozen reads are in flight in this worker.
"""

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, JsonResponse
from django.urls import path

# This worker's frozen reads between their start and their end (one worker process serves
# every request of the test, one greenlet per request).
frozen_in_flight = 0


def healthy(request: HttpRequest) -> JsonResponse:
    values = settings.SITE["healthy_values"]
    reads = 0
    for _ in range(settings.SITE["reads_per_request"]):
        for key, value in values.items():
            if cache.get(key) != value:
                return JsonResponse({"error": f"{key} did not read back"}, status=500)
            reads += 1
    return JsonResponse({"reads": reads, "frozen_in_flight": frozen_in_flight})


def frozen(request: HttpRequest) -> JsonResponse:
    global frozen_in_flight
    frozen_in_flight += 1
    try:
        value = cache.get(settings.SITE["frozen_key"], "default")
        outcome = f"returned {value!r}"
    except Exception as error:
        outcome = type(error).__name__
    finally:
        frozen_in_flight -= 1
    return JsonResponse({"outcome": outcome})


def status(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"frozen_in_flight": frozen_in_flight})


urlpatterns = [
    path("healthy", healthy),
    path("frozen", frozen),
    path("status", status),
]
