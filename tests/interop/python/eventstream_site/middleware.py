"""Records every request the app receives, one JSON object a line, for the tests to inspect."""

import json
import threading

from django.conf import settings

_lock = threading.Lock()


class RequestLog:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        entry = {
            "path": request.get_full_path(),
            "last_event_id": request.headers.get("Last-Event-ID"),
            "grip_last": request.headers.get("Grip-Last"),
            "grip_sig": "Grip-Sig" in request.headers,
            "status": response.status_code,
            "grip_hold": response.get("Grip-Hold"),
            "grip_link": response.get("Grip-Link"),
            "grip_channel": response.get("Grip-Channel"),
        }
        with _lock, open(settings.EVENTSTREAM_SITE_REQUEST_LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        return response
