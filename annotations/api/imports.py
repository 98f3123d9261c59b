"""`POST /api/projects/<pk>/items/import/`: import a file into a project (project admins), in
any format `annotations.imports.import_file` reads, all or nothing.

Two ways to send it, both streamed to a temporary file rather than held in memory (the import
then reads it a chunk at a time, JSON arrays through `annotations.imports.json_array`):

- multipart, the file in `file`, with optional fields `format`, `text_field`, `id_field`,
  `skip_duplicates` (what the import page sends);
- the file as the request body (`curl --data-binary @tasks.json`), with the options in the
  query string (`fmt`, `filename`, `text_field`, `id_field`, `skip_duplicates`).

201 with what was imported; 422 with the located problems (`errors`, `total`) when nothing
was; 413 for a file over `IMPORT_MAX_UPLOAD_BYTES` (import it with `manage.py import_items`).
"""

from __future__ import annotations

import tempfile
from typing import IO

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access, imports
from annotations.imports.uploads import upload_refusal

_CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


class ImportFileSerializer(serializers.Serializer):
    file = serializers.FileField()
    format = serializers.ChoiceField(choices=list(imports.ALL_FORMATS), required=False)
    text_field = serializers.CharField(required=False, default="text")
    id_field = serializers.CharField(required=False)
    skip_duplicates = serializers.BooleanField(required=False, default=False)


class ImportResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    summary = serializers.CharField()
    duplicates = serializers.ListField(child=serializers.CharField())
    duplicate_count = serializers.IntegerField()
    skipped = serializers.IntegerField()


class ImportErrorsSerializer(serializers.Serializer):
    errors = serializers.ListField(child=serializers.CharField())
    total = serializers.IntegerField(required=False)


QUERY_OPTIONS = [
    OpenApiParameter("fmt", OpenApiTypes.STR, enum=list(imports.ALL_FORMATS), required=False),
    OpenApiParameter("filename", OpenApiTypes.STR, required=False),
    OpenApiParameter("text_field", OpenApiTypes.STR, required=False),
    OpenApiParameter("id_field", OpenApiTypes.STR, required=False),
    OpenApiParameter("skip_duplicates", OpenApiTypes.BOOL, required=False),
]


class ItemImport(APIView):
    # Multipart only; any other body is the file itself, read by the view, never parsed.
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="projects_items_import",
        description="Import a file (multipart `file`, or the request body with the options in "
        "the query string), all or nothing.",
        parameters=QUERY_OPTIONS,
        request={
            "multipart/form-data": ImportFileSerializer,
            "application/octet-stream": OpenApiTypes.BINARY,
        },
        responses={
            201: ImportResultSerializer,
            400: ImportErrorsSerializer,
            413: ImportErrorsSerializer,
            422: ImportErrorsSerializer,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        content_type = request.content_type or ""
        # Any other body is the file itself: `curl --data-binary @file` labels it
        # application/x-www-form-urlencoded, and a form field cannot carry a file anyway.
        if content_type.startswith("multipart/form-data"):
            upload = request.FILES.get("file")
            if refusal := upload_refusal(request._request):
                return Response({"errors": [refusal]}, status=413)
            if upload is None:
                return Response({"errors": ['Send the file in the "file" field.']}, status=400)
            options = request.data
            return self._import(project, upload, upload.name or "upload", options, "format")
        with tempfile.TemporaryFile() as spool:
            if (size := _spool(request, spool)) is None:
                limit = settings.IMPORT_MAX_UPLOAD_BYTES
                message = (
                    f"The upload is over the limit of {limit:,} bytes for files imported over "
                    "the web; nothing was imported. Import it on the server instead: manage.py "
                    "import_items <project id or name> <file>"
                )
                return Response({"errors": [message]}, status=413)
            if not size:
                return Response({"errors": ["The request has no file in its body."]}, status=400)
            spool.seek(0)
            options = request.query_params
            name = options.get("filename") or "upload"
            return self._import(project, spool, name, options, "fmt")

    def _import(self, project, fileobj: IO[bytes], name: str, options, fmt_key: str) -> Response:
        try:
            result = imports.import_file(
                project=project,
                fileobj=fileobj,
                filename=name,
                fmt=(options.get(fmt_key) or "").strip() or None,
                text_field=options.get("text_field") or "text",
                id_field=options.get("id_field") or None,
                skip_duplicates=str(options.get("skip_duplicates", "")).lower() in _TRUE,
            )
        except imports.ImportFailed as exc:
            return Response(
                {"errors": exc.messages, "total": exc.total},
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(
            {
                "created": result.created,
                "summary": result.summary(),
                "duplicates": result.duplicate_messages,
                "duplicate_count": result.duplicate_count,
                "skipped": result.skipped,
            },
            status=status.HTTP_201_CREATED,
        )


def _spool(request: Request, spool: IO[bytes]) -> int | None:
    """Copy the request body to `spool` a chunk at a time; None when it is over the limit."""
    limit = settings.IMPORT_MAX_UPLOAD_BYTES
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if declared > limit:
        return None
    size = 0
    while chunk := request._request.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        spool.write(chunk)
    return size
