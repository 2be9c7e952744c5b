"""Settings of the Django app the django-eventstream interop tests run behind Holdfast.

Read from the environment the test sets: `EVENTSTREAM_SITE_DB` (the sqlite file),
`EVENTSTREAM_SITE_REQUEST_LOG` (where each request the app receives is recorded) and
`GRIP_URL` (Holdfast's publish API).
"""

import os

SECRET_KEY = "holdfast-interop-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True

INSTALLED_APPS = ["django_eventstream"]
MIDDLEWARE = [
    "eventstream_site.middleware.RequestLog",
    "django_grip.GripMiddleware",
]
ROOT_URLCONF = "eventstream_site.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["EVENTSTREAM_SITE_DB"],
        "OPTIONS": {"timeout": 20},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

EVENTSTREAM_STORAGE_CLASS = "django_eventstream.storage.DjangoModelStorage"
# As most deployments set it: the publish API, no key. django-grip then takes any request
# with a Grip-Sig header as one that came through the proxy.
GRIP_URL = os.environ["GRIP_URL"]

EVENTSTREAM_SITE_REQUEST_LOG = os.environ["EVENTSTREAM_SITE_REQUEST_LOG"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
}
