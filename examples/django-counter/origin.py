"""A counter API in Django with django-grip, in one file.

GET /counter/ returns {"value": n}. With ?last=n, when n is still the value, django-grip asks
Holdfast to hold the request as a long-poll on channel "counter" (up to 55 s); it is answered by
the next increment, or with the unchanged value when it times out. POST /counter/ adds one and
publishes the new value to the channel as the held requests' response."""

import json
import os
import sys
import threading

from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))
settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="django-counter-example",
    MIDDLEWARE=["django_grip.GripMiddleware"],
    GRIP_URL=os.environ.get("PUBLISH_URL", "http://127.0.0.1:5561"),
)

from django.http import HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.csrf import csrf_exempt  # noqa: E402
from django_grip import publish, set_hold_longpoll  # noqa: E402
from gripcontrol import HttpResponseFormat  # noqa: E402

value = 0
lock = threading.Lock()


def body(n):
    return json.dumps({"value": n}) + "\n"


def index(request):
    with open(os.path.join(HERE, "index.html"), "rb") as page:
        return HttpResponse(page.read(), content_type="text/html")


@csrf_exempt
def counter(request):
    global value
    if request.method == "POST":
        with lock:
            value += 1
            n = value
            publish("counter", HttpResponseFormat(headers={"Content-Type": "application/json"},
                                                  body=body(n)), blocking=True)
        return JsonResponse({"value": n})
    last = request.GET.get("last")
    with lock:
        n = value
    if last is not None and last == str(n):
        set_hold_longpoll(request, "counter", timeout=55)
    return HttpResponse(body(n), content_type="application/json")


urlpatterns = [path("", index), path("counter/", counter)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    port = os.environ.get("ORIGIN_PORT", "8000")
    execute_from_command_line([sys.argv[0], "runserver", "--noreload", f"127.0.0.1:{port}"])
