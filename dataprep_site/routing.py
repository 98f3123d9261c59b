from django.urls import path

from annotations.consumers import ProjectConsumer

websocket_urlpatterns = [
    path("ws/projects/<int:pk>/", ProjectConsumer.as_asgi()),
]
