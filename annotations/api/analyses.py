"""The data analyses over the API (reviewers and project admins, as on the pages): ask for a
run, see the latest runs, list likely label errors, send the worst to review (project admins)
and dismiss a flag ("the label is right"). The same services as the pages and commands."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.shapes import SentToReviewSerializer
from annotations.models import Item, Project
from curation.analysis_runs import ANALYSES, latest_runs, run_request
from curation.dataset_models import AnalysisRun, LabelIssue
from curation.label_issues import (
    MAX_TO_REVIEW,
    label_errors_to_review,
    label_issue_dismiss,
    label_issues_for,
)


class AnalysisRunSerializer(serializers.ModelSerializer):
    requested_by = serializers.SerializerMethodField()

    class Meta:
        model = AnalysisRun
        fields = [
            "id",
            "kind",
            "status",
            "progress",
            "message",
            "model_version",
            "result",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_requested_by(self, run: AnalysisRun) -> str | None:
        return run.requested_by.get_username() if run.requested_by else None


class LatestRunsSerializer(serializers.Serializer):
    """The latest run of each analysis, by kind; kinds never run are absent."""

    def get_fields(self) -> dict:
        return {str(kind): AnalysisRunSerializer(required=False) for kind in ANALYSES}


class LabelIssueSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="item.external_id", read_only=True)

    class Meta:
        model = LabelIssue
        fields = [
            "item",
            "external_id",
            "gold",
            "score",
            "suggested",
            "probabilities",
            "status",
            "model_version",
            "updated_at",
        ]
        read_only_fields = fields


class ScoreCursorPagination(CursorPagination):
    """Most likely wrong first; stable under ties (DRF adds an offset among equal scores)."""

    ordering = ("-score", "item_id")
    page_size_query_param = "page_size"
    max_page_size = 1000
    invalid_cursor_message = "Invalid cursor: follow the next/previous links of a page."

    def decode_cursor(self, request: Request) -> Cursor | None:
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [self.invalid_cursor_message]}) from None
        if cursor is not None and cursor.position is not None:
            try:
                float(cursor.position)
            except ValueError:
                raise ValidationError({"cursor": [self.invalid_cursor_message]}) from None
        return cursor


class ToReviewSerializer(serializers.Serializer):
    limit = serializers.IntegerField(min_value=1, max_value=MAX_TO_REVIEW)
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


def _project(request: Request, pk: int, allowed=access.REVIEW) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=allowed)


class AnalysisRunList(APIView):
    """The latest run of each analysis (kinds never run are absent)."""

    @extend_schema(responses=LatestRunsSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        runs = latest_runs(project)
        return Response({kind: AnalysisRunSerializer(run).data for kind, run in runs.items()})


class AnalysisRunCreate(APIView):
    """Ask for a run of `kind` (202 with the run; the queued or running one if there is)."""

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter(
                "kind", OpenApiTypes.STR, OpenApiParameter.PATH, enum=[str(k) for k in ANALYSES]
            )
        ],
        responses={202: AnalysisRunSerializer},
    )
    def post(self, request: Request, pk: int, kind: str) -> Response:
        project = _project(request, pk)
        if kind not in ANALYSES:
            raise ValidationError(
                {"kind": f"Unknown analysis {kind!r}; one of {', '.join(ANALYSES)}."}
            )
        run = run_request(project=project, kind=kind, user=request.user)
        return Response(AnalysisRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("min_score", OpenApiTypes.NUMBER, description="0 to 1"),
            OpenApiParameter("status", OpenApiTypes.STR, enum=list(LabelIssue.Status.values)),
        ]
    )
)
class LabelErrorList(generics.ListAPIView):
    """Every scored gold label, most likely wrong first: `?min_score=0.5&status=flagged`."""

    serializer_class = LabelIssueSerializer
    pagination_class = ScoreCursorPagination

    def get_queryset(self):
        project = _project(self.request, self.kwargs["pk"])
        params = self.request.query_params
        min_score = None
        if params.get("min_score"):
            try:
                min_score = float(params["min_score"])
            except ValueError:
                raise ValidationError({"min_score": "A number between 0 and 1."}) from None
        wanted = params.get("status")
        if wanted is not None and wanted not in LabelIssue.Status.values:
            choices = ", ".join(v or '""' for v in LabelIssue.Status.values)
            raise ValidationError({"status": f"Use one of {choices}."})
        return label_issues_for(project, min_score=min_score, status=wanted)


class LabelErrorsToReview(APIView):
    """Send the `limit` most likely label errors to review (project admins)."""

    @extend_schema(request=ToReviewSerializer, responses=SentToReviewSerializer)
    def post(self, request: Request, pk: int) -> Response:
        project = _project(request, pk, allowed=access.MANAGE)
        body = ToReviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sent = label_errors_to_review(
            project=project,
            user=request.user,
            limit=body.validated_data["limit"],
            note=body.validated_data["note"],
        )
        external = dict(Item.objects.filter(pk__in=sent).values_list("pk", "external_id"))
        return Response({"sent": len(sent), "external_ids": [external[i] for i in sent]})


class LabelIssueDismiss(APIView):
    """ "The label is right": the flag is not raised again while the gold label stays."""

    @extend_schema(request=None, responses=LabelIssueSerializer)
    def post(self, request: Request, pk: int, item_pk: int) -> Response:
        project = _project(request, pk)
        item = Item.objects.filter(project=project, pk=item_pk).first()
        if item is None:
            raise Http404("No such item.")
        try:
            issue = label_issue_dismiss(item=item, user=request.user)
        except ValueError as exc:
            raise ValidationError({"item": str(exc)}) from exc
        issue.item = item
        return Response(LabelIssueSerializer(issue).data)
