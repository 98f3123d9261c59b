"""Item images, served only to members of the item's project."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from annotations import access
from annotations.models import Item

# Formats accepted at import (see annotations.imports) and the content type each is served as.
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}


def serve_item_image(item: Item) -> FileResponse:
    """The item's image file as a response; the caller has already checked permissions.

    Shared by the annotate page, the admin and the API so that all three serve images the same
    safe way: the content type comes from the format verified at import (never the file name),
    the browser may not sniff another type, and the CSP sandbox keeps anything that slipped
    through from running script. 404 when the item has no image or the file is gone.
    """
    content_type = CONTENT_TYPES.get(item.image_format)
    if not item.image or content_type is None:
        raise Http404("This item has no image.")
    try:
        handle = item.image.open("rb")
    except FileNotFoundError:
        raise Http404("The image file is missing.") from None
    response = FileResponse(handle, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "no-store"  # a project's data (NoStoreMiddleware sets it too)
    return response


@require_GET
@login_required
def item_image(request: HttpRequest, pk: int, item_pk: int) -> FileResponse:
    return serve_item_image(access.get_item_for_user(request.user, pk, item_pk))
