"""JSON answers for the requests Django refuses before any API view runs (a path that matches
no route, a body over the upload limits, a malformed request): an API client gets
`{"detail": …}` like every other API error, never an HTML page; people get Django's pages."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults

_EXPLAINED = (RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    # These messages name only the limit that was passed; others may quote the request.
    detail = str(exception) if isinstance(exception, _EXPLAINED) else "Bad request."
    return JsonResponse({"detail": detail}, status=400)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return JsonResponse({"detail": "Not found."}, status=404)
