import json

from django.http import HttpResponseNotAllowed, JsonResponse
from django_eventstream import send_event
from django_eventstream.utils import get_storage, make_id


def send(request):
    """POST {"channel": ..., "events": [data, ...]}: calls send_event() for each, in order, and
    answers the event id django-eventstream gave each one (`channel:N`)."""
    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    body = json.loads(request.body)
    channel = body["channel"]
    storage = get_storage()
    ids = []
    for data in body["events"]:
        send_event(channel, body.get("type", "message"), data, async_publish=False)
        ids.append(make_id({channel: storage.get_current_id(channel)}))
    return JsonResponse({"ids": ids})
