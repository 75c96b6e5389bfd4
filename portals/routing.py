from django.urls import path

from . import console, consumers

websocket_urlpatterns = [
    path("ws/live/", consumers.LiveConsumer.as_asgi()),
    path("ws/events/", consumers.EventStreamConsumer.as_asgi()),
    path("ws/console/<uuid:vm_id>/", console.ConsoleConsumer.as_asgi()),
]
