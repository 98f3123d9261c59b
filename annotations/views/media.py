"""Item images, served only to members of the item's project."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from annotations import access

# Formats accepted at import (see annotations.imports) and the content type each is served as.
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}


@require_GET
@login_required
def item_image(request: HttpRequest, pk: int, item_pk: int) -> FileResponse:
    item = access.get_item_for_user(request.user, pk, item_pk)
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
    response["Cache-Control"] = "private, max-age=3600"
    return response
