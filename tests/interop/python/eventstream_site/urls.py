from django.urls import include, path

import django_eventstream

from . import views

urlpatterns = [
    path("events/", include(django_eventstream.urls)),
    path("send/", views.send),
]
