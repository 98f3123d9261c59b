"""ASGI entry point: HTTP through Django, websockets through Channels with the session user."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataprep_site.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from curation.embedded import EmbeddedTrainingWorker, LazyTrainingApplication  # noqa: E402
from dataprep_site.routing import websocket_urlpatterns  # noqa: E402

# Messages for the training worker (`manage.py runworker training`, or embedded below); built
# at the first message, so a server with an external worker never loads the model machinery.
channel_application = LazyTrainingApplication()

application = EmbeddedTrainingWorker(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
            "channel": channel_application,
        }
    ),
    channel_application,
)

# What is loaded by now lives as long as the process: out of the collector's sight, so that
# collections during requests walk only what requests create (their pauses were the tail).
import gc  # noqa: E402

gc.collect()
gc.freeze()
