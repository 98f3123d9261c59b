"""The OpenAPI 3 description of the API (drf-spectacular), served at /api/schema/ with Swagger
UI at /api/docs/.

How to describe a view (tests/test_openapi.py fails on any endpoint the generator cannot read):
- A generic view (`ListAPIView` …) with a `serializer_class` needs nothing: its cursor
  parameters and page shape come from the pagination class.
- An `APIView` method gets `@extend_schema(request=BodySerializer, responses=...)` with the
  serializer of what it answers; the shapes of responses built from dicts live in
  `annotations/api/shapes.py`. Query parameters: `parameters=[OpenApiParameter(...)]` or a
  query serializer. Downloads: `responses={(200, "text/csv"): BINARY}`.
- `AutoSchema` below adds the errors every endpoint can answer (400 when it takes input, 401,
  403, 404 for paths with ids, 429); declare the others (409, 202, 204) yourself with `ERROR`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular import openapi
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from rest_framework import serializers
from rest_framework.permissions import AllowAny

BINARY = OpenApiTypes.BINARY
#: A JSON file of records (a Label Studio export): clients parse it, so the schema says so.
JSON_RECORDS = {"type": "array", "items": {"type": "object", "additionalProperties": True}}


def download_responses(media_types: Iterable[str]) -> dict[tuple[int, str], Any]:
    """A 200 per download media type: JSON as records, anything else as bytes."""
    out: dict[tuple[int, str], Any] = {}
    for media in media_types:
        bare = media.split(";")[0]
        out[(200, bare)] = JSON_RECORDS if bare == "application/json" else BINARY
    return out


class ErrorSerializer(serializers.Serializer):
    """What a refused request gets: DRF's `{"detail": "…"}`."""

    detail = serializers.CharField()


class ValidationErrorSerializer(serializers.Serializer):
    """A bad request: each field (or `non_field_errors`) with its messages, or a list of
    messages. Described by `_ValidationErrorShape`."""


class _ValidationErrorShape(OpenApiSerializerExtension):
    target_class = ValidationErrorSerializer

    def map_serializer(self, auto_schema, direction):
        message = {"type": "string"}
        messages = {"type": "array", "items": {}}
        return {
            "oneOf": [
                {
                    "type": "object",
                    "additionalProperties": {"oneOf": [messages, message, {"type": "object"}]},
                },
                messages,
            ],
            "description": "What is wrong with the input, by field.",
        }


class LockedOutSerializer(ErrorSerializer):
    retry_after_minutes = serializers.IntegerField(required=False)


ERROR = ErrorSerializer
VALIDATION_ERROR = ValidationErrorSerializer


class ExpiringTokenScheme(OpenApiAuthenticationExtension):
    """Knox tokens as `annotations.api.authentication` reads them."""

    target_class = "annotations.api.authentication.ExpiringTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": (
                "`Token <token>`, with a token from `POST /api/auth/token/` "
                "(expires after `API_TOKEN_TTL_HOURS`)."
            ),
        }


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema plus the error answers that every endpoint shares."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        extra: dict[str, tuple[type[serializers.Serializer], str]] = {}
        takes_input = "requestBody" in operation or any(
            p.get("in") == "query" for p in operation.get("parameters", [])
        )
        if takes_input:
            extra["400"] = (VALIDATION_ERROR, "Bad input; nothing was changed.")
        if not any(issubclass(p, AllowAny) for p in self.view.permission_classes):
            extra["401"] = (ERROR, "The token is invalid or expired.")
            extra["403"] = (ERROR, "Not logged in, or your role does not allow this.")
        if "{" in self.path:
            extra["404"] = (ERROR, "No such object, or not in one of your projects.")
        extra["429"] = (LockedOutSerializer, "Too many requests (throttled or locked out).")
        for code, (serializer, description) in extra.items():
            if code not in responses:
                response = self._get_response_for_code(serializer, code)
                response["description"] = description
                responses[code] = response
        return operation
