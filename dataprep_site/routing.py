from django.urls import path, re_path

from annotations.consumers import NotFoundConsumer, ProjectConsumer

websocket_urlpatterns = [
    path("ws/projects/<int:pk>/", ProjectConsumer.as_asgi()),
    # Last: any other path is refused cleanly, not with the router's "No route found" error.
    re_path(r"", NotFoundConsumer.as_asgi()),
]
