"""Dataset versions over the API (reviewers and project admins, as on the pages): list, save
(202: a worker writes it), one version, download in any format, and the diff of two. The
same services as the pages and the commands."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.schema import BINARY, ERROR
from annotations.api.shapes import (
    VersionDetailSerializer,
    VersionDiffSerializer,
    VersionSerializer,
)
from annotations.models import Project
from annotations.views.versions import (
    IMAGE_EXPORT_FORMATS,
    _formats,
    version_download,
    version_or_404,
)
from curation.dataset_versions import (
    VersionError,
    VersionFileError,
    version_request,
)
from curation.version_diff import CHANGES, diff_of
from curation.version_listing import STORED_FIELDS, versions_listed

#: Changes per page of a diff.
DIFF_PAGE = 1000
FIELDS = (*STORED_FIELDS, "author", "accuracy_change")


class VersionCreateSerializer(serializers.Serializer):
    name = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


def _project(request: Request, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.REVIEW)


def _shown(row: dict) -> dict:
    return {field: row.get(field) for field in FIELDS}


class VersionList(APIView):
    """GET: every version, newest first, with its counts and model metrics. POST {name, note}:
    save a version now (202; `status` becomes "ready" when a worker has written it)."""

    @extend_schema(responses=VersionSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        return Response([_shown(row) for row in versions_listed(project)])

    @extend_schema(request=VersionCreateSerializer, responses={202: VersionSerializer})
    def post(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        body = VersionCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            version = version_request(project, author=request.user, **body.validated_data)
        except VersionError as exc:
            raise ValidationError({"name": str(exc)}) from exc
        row = next(r for r in versions_listed(project) if r["name"] == version.name)
        return Response(_shown(row), status=status.HTTP_202_ACCEPTED)


class VersionDetail(APIView):
    @extend_schema(responses=VersionDetailSerializer)
    def get(self, request: Request, pk: int, name: str) -> Response:
        project = _project(request, pk)
        version = version_or_404(project, name)
        row = next(r for r in versions_listed(project) if r["name"] == version.name)
        return Response(_shown(row) | {"split_rule": version.split_rule})


class VersionDownload(APIView):
    """`export.jsonl`, `export.csv` (streamed), `export.hf` or `export.folders` (a zip). 409
    when the version's file fails its checksum: it is never served."""

    @extend_schema(
        operation_id="projects_versions_export",
        parameters=[
            OpenApiParameter(
                "fmt",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                enum=list(IMAGE_EXPORT_FORMATS),
                description="`folders`: image projects only.",
            )
        ],
        responses={
            (200, "application/x-ndjson"): BINARY,
            (200, "text/csv"): BINARY,
            (200, "application/zip"): BINARY,
            409: OpenApiResponse(ERROR, description="The version's file failed its checksum."),
        },
    )
    def get(self, request: Request, pk: int, name: str, fmt: str):
        project = _project(request, pk)
        version = version_or_404(project, name)
        if fmt not in _formats(project):
            raise ValidationError({"format": f"Use one of {', '.join(_formats(project))}."})
        try:
            return version_download(request._request, version, fmt)
        except VersionFileError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        except VersionError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


class VersionDiff(APIView):
    """`?from=A&to=B`: the summary, the from → to pairs and a page of the changes
    (`change=` added|removed|relabelled|labelled|unlabelled, `offset=`, DIFF_PAGE at most)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.STR, required=True, description="A version."),
            OpenApiParameter("to", OpenApiTypes.STR, required=True, description="A version."),
            OpenApiParameter("change", OpenApiTypes.STR, enum=list(CHANGES)),
            OpenApiParameter("offset", OpenApiTypes.INT, description=f"{DIFF_PAGE} a page"),
        ],
        responses={
            200: VersionDiffSerializer,
            409: OpenApiResponse(ERROR, description="A version's file failed its checksum."),
        },
    )
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        params = request.query_params
        missing = [key for key in ("from", "to") if not params.get(key)]
        if missing:
            raise ValidationError(dict.fromkeys(missing, "A version name."))
        a, b = version_or_404(project, params["from"]), version_or_404(project, params["to"])
        try:
            diff = diff_of(a, b)
        except (VersionFileError, VersionError) as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        changes = diff["changes"]
        change = params.get("change", "")
        if change:
            if change not in CHANGES:
                raise ValidationError({"change": f"Use one of {', '.join(CHANGES)}."})
            changes = [c for c in changes if c["change"] == change]
        try:
            offset = int(params.get("offset", "0"))
        except ValueError:
            raise ValidationError({"offset": "A whole number."}) from None
        if offset < 0:
            raise ValidationError({"offset": "A whole number."})
        page = changes[offset : offset + DIFF_PAGE]
        return Response(
            {
                "from": diff["from"],
                "to": diff["to"],
                "summary": diff["summary"],
                "pairs": diff["pairs"],
                "count": len(changes),
                "offset": offset,
                "next_offset": offset + len(page) if offset + len(page) < len(changes) else None,
                "changes": page,
            }
        )
