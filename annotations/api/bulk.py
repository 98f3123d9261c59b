"""The bulk actions over the API: `POST items/actions/` runs one (or counts its items with
`dry_run`), `GET items/export.<fmt>` exports a selection. Same services, roles and checks as
the data browser's bar (`annotations.bulk`)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access, bulk
from annotations.action_log import item_action_summary, item_actions_for
from annotations.api.schema import ErrorSerializer, download_responses
from annotations.api.shapes import (
    BROWSE_FILTERS,
    ItemActionResultSerializer,
    ItemActionSummarySerializer,
)
from annotations.api.views import ByIdCursorPagination
from annotations.exports import FORMATS
from annotations.models import ItemAction, Review
from annotations.views.bulk import selection_filename
from annotations.views.data import export_response, stream_export

Kind = ItemAction.Kind
RUNNABLE = [Kind.REVIEW, Kind.RELABEL, Kind.ASSIGN, Kind.DELETE]


class ItemActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=RUNNABLE)
    items = serializers.ListField(
        child=serializers.IntegerField(min_value=1), required=False, max_length=bulk.MAX_PICKED
    )
    filter = serializers.CharField(required=False, allow_blank=True, max_length=4000)
    reason = serializers.ChoiceField(
        choices=list(bulk.REVIEW_REASONS), required=False, default=Review.Reason.FLAG
    )
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    users = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, default=list
    )
    dry_run = serializers.BooleanField(required=False, default=False)

    def validate(self, data: dict) -> dict:
        if ("items" in data) == ("filter" in data):
            raise serializers.ValidationError(
                {"items": 'Give either "items" (ids) or "filter" (a querystring), not both.'}
            )
        if data["action"] == Kind.ASSIGN and not data["users"]:
            raise serializers.ValidationError({"users": "Name the annotators to assign to."})
        return data


def _errors(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class ItemActions(APIView):
    """Run a bulk action on picked items or on all items matching a filter; `dry_run` answers
    how many items it would take, changing nothing."""

    @extend_schema(request=ItemActionSerializer, responses=ItemActionResultSerializer)
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
        # The role first: whoever may not run the action learns nothing about their input.
        action = request.data.get("action") if hasattr(request.data, "get") else None
        if action in RUNNABLE and not access.can(project, bulk.ROLES[action]):
            raise PermissionDenied("Your role in this project does not allow this action.")
        body = ItemActionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            selection = (
                bulk.Selection.of_ids(data["items"])
                if "items" in data
                else bulk.Selection.matching(data["filter"])
            )
            users = (
                bulk.annotators_named(project, data["users"])
                if data["action"] == Kind.ASSIGN
                else []
            )
            if data["dry_run"]:
                count = selection.count(project)
                return Response({"action": data["action"], "dry_run": True, "count": count})
            result = bulk.item_action_run(
                project=project,
                user=request.user,
                action=data["action"],
                selection=selection,
                reason=data["reason"],
                note=data["note"],
                users=users,
            )
        except DjangoValidationError as exc:
            raise _errors(exc) from exc
        return Response(
            {
                "id": result.action.pk,
                "action": data["action"],
                "dry_run": False,
                "count": result.action.item_count,
                "done": result.done,
                "skipped": result.skipped,
                "notes": result.notes,
            }
        )


class ItemExport(APIView):
    """The items matching the filter (the browser's query parameters) or the ids given as
    `item`, in the project export's format (jsonl or csv), streamed."""

    @extend_schema(
        operation_id="projects_items_export",
        parameters=[
            OpenApiParameter("fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(FORMATS)),
            OpenApiParameter(
                "item",
                {"type": "array", "items": {"type": "integer", "minimum": 1}},
                description="Item ids (repeatable); instead of the filters.",
            ),
            *BROWSE_FILTERS,
        ],
        responses=download_responses(FORMATS.values()),
    )
    def get(self, request: Request, pk: int, fmt: str):
        project = access.get_project_for_user(request.user, pk, allowed=access.EXPORT)
        params = request.query_params.copy()
        picked = params.pop("item", [])
        params.pop("format", None)  # DRF's format override, not a filter
        try:
            selection = (
                bulk.Selection.of_ids(picked)
                if picked
                else bulk.Selection.matching(params.urlencode())
            )
            _, chunks = bulk.items_export(
                project=project, user=request.user, selection=selection, fmt=fmt
            )
        except DjangoValidationError as exc:
            raise _errors(exc) from exc
        return stream_export(
            request._request, project, fmt, chunks, filename=selection_filename(project, fmt)
        )


#: Every whole-project export: the streamed formats, and the folders as a zip.
PROJECT_EXPORT_MEDIA = {**FORMATS, "hf": "application/zip", "folders": "application/zip"}


class ProjectExport(APIView):
    """Every item of the project with its gold label and answers, in any format the project
    page offers: `jsonl`, `csv`, `labelstudio`, `doccano` (text projects), streamed; `hf` (a
    Hugging Face `datasets` folder) and `folders` (image projects) as a zip. Reviewers and
    project admins."""

    @extend_schema(
        operation_id="projects_export",
        parameters=[
            OpenApiParameter(
                "fmt", OpenApiTypes.STR, OpenApiParameter.PATH, enum=list(PROJECT_EXPORT_MEDIA)
            ),
        ],
        responses={
            **download_responses(PROJECT_EXPORT_MEDIA.values()),
            409: ErrorSerializer,
        },
    )
    def get(self, request: Request, pk: int, fmt: str):
        if fmt not in PROJECT_EXPORT_MEDIA:
            raise Http404("No such export format.")
        response = export_response(request._request, pk, fmt)
        if response.status_code == 409:  # nothing to export: the page's text, as the API's JSON
            return Response({"detail": response.content.decode()}, status=409)
        return response


class NewestFirstPagination(ByIdCursorPagination):
    ordering = "-id"
    page_size = 50


@extend_schema_view(get=extend_schema(responses=ItemActionSummarySerializer(many=True)))
class ItemActionLog(generics.ListAPIView):
    """`GET items/actions/log/`: the project's recorded data actions, newest first, as the
    action log page lists them (who, when, what, how many, reason, selection)."""

    pagination_class = NewestFirstPagination

    def get_queryset(self):
        project = access.get_project_for_user(
            self.request.user, self.kwargs["pk"], allowed=access.REVIEW
        )
        return item_actions_for(project)

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([item_action_summary(a) for a in page])
