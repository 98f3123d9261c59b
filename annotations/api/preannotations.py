"""Predictions (pre-annotations) and vectors from a team's own models, over the API.

`POST predictions/` and `POST vectors/` take a JSON array or JSON Lines body of any size (read
incrementally, `annotations.preannotation_uploads`) and store it all or nothing: a bad row gets
400 with every problem's row and field. Project admins write; every member reads; non-members
get 404.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.conf import settings
from django.db.models import QuerySet
from django.http import Http404
from django.template.defaultfilters import filesizeformat
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.schema import ERROR
from annotations.api.views import ByIdCursorPagination
from annotations.models import ItemVector, PreAnnotation
from annotations.preannotation_uploads import (
    UploadError,
    UploadResult,
    predictions_upload,
    vectors_upload,
)
from annotations.preannotations import MODEL_NAME_MAX, vector_values
from curation.training_requests import request_training_on_commit

#: Bytes read from the request body at a time.
READ_CHUNK = 64 * 1024


class PredictionInSerializer(serializers.Serializer):
    """One row of a predictions upload (a JSON array of these, or one per line)."""

    item = serializers.CharField(help_text="The item's external id.")
    model = serializers.CharField(max_length=MODEL_NAME_MAX, help_text="The model's name.")
    label = serializers.CharField(required=False, help_text="The predicted class.")
    labels = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Multi-label: the classes."
    )
    scores = serializers.DictField(
        child=serializers.FloatField(min_value=0, max_value=1),
        required=False,
        help_text="Probability per class name; without labels the top class is the label.",
    )
    score = serializers.FloatField(
        min_value=0, max_value=1, required=False, help_text="Overall confidence, 0-1."
    )


class VectorInSerializer(serializers.Serializer):
    """One row of a vectors upload."""

    item = serializers.CharField(help_text="The item's external id.")
    vector = serializers.ListField(
        child=serializers.FloatField(), help_text="The embedding; one length per project."
    )


class UploadRowErrorSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="0-based record index.")
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class UploadErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = UploadRowErrorSerializer(many=True)


class UploadResultSerializer(serializers.Serializer):
    rows = serializers.IntegerField(help_text="Rows read.")
    stored = serializers.IntegerField(help_text="Rows stored (a repeated item counts once).")
    models = serializers.ListField(child=serializers.CharField(), required=False)
    dim = serializers.IntegerField(required=False, help_text="The project's vector length.")


class PredictionSerializer(serializers.ModelSerializer):
    item = serializers.CharField(source="item.external_id", read_only=True)
    item_id = serializers.IntegerField(read_only=True)
    model = serializers.CharField(source="model_name", read_only=True)

    class Meta:
        model = PreAnnotation
        fields = ["id", "item", "item_id", "model", "labels", "scores", "score", "updated_at"]
        read_only_fields = fields


class PredictionQuerySerializer(serializers.Serializer):
    model = serializers.CharField(max_length=MODEL_NAME_MAX, required=False)


class PredictionDeleteQuerySerializer(serializers.Serializer):
    model = serializers.CharField(max_length=MODEL_NAME_MAX)


class VectorSerializer(serializers.Serializer):
    item = serializers.CharField()
    item_id = serializers.IntegerField()
    dim = serializers.IntegerField()
    vector = serializers.ListField(child=serializers.FloatField())


class VectorSummarySerializer(serializers.Serializer):
    dim = serializers.IntegerField(allow_null=True)
    count = serializers.IntegerField()


class DeletedSerializer(serializers.Serializer):
    deleted = serializers.IntegerField(help_text="Predictions removed.")


def _upload_schema(row: type[serializers.Serializer]) -> dict:
    """A bulk upload's request (a JSON array, or JSON Lines of one row a line) and answers."""
    return {
        "request": {"application/json": row(many=True), "application/x-ndjson": row},
        "responses": {
            201: UploadResultSerializer,
            400: OpenApiResponse(
                UploadErrorSerializer, description="Bad rows (each named); nothing was stored."
            ),
            413: OpenApiResponse(ERROR, description="Over IMPORT_MAX_UPLOAD_BYTES."),
        },
    }


def _body(request: Request) -> Iterator[bytes]:
    """The request body in pieces, refused (413) past IMPORT_MAX_UPLOAD_BYTES, as any upload."""
    limit = settings.IMPORT_MAX_UPLOAD_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise _TooLarge(declared)
    raw = request._request
    if getattr(raw, "_read_started", False) and hasattr(raw, "_body"):
        yield raw._body  # already read (by a middleware): it is in memory anyway
        return
    received = 0
    while chunk := raw.read(READ_CHUNK):
        received += len(chunk)
        if received > limit:
            raise _TooLarge(received)
        yield chunk


class _TooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _upload(request: Request, pk: int, upload) -> Response:
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    try:
        result: UploadResult = upload(project, _body(request))
    except UploadError as exc:
        body = {
            "detail": f"{len(exc.errors)} problem(s) in the upload; nothing was stored.",
            "errors": [e.as_dict() for e in exc.errors],
        }
        return Response(UploadErrorSerializer(body).data, status=status.HTTP_400_BAD_REQUEST)
    except _TooLarge as exc:
        limit = filesizeformat(settings.IMPORT_MAX_UPLOAD_BYTES)
        detail = (
            f"The body is {filesizeformat(exc.size)}, over the limit of {limit}; nothing was "
            "stored. Send it in several requests (each replaces what it repeats)."
        )
        return Response({"detail": detail}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    # The worker ranks the queue by new predictions before the first label, and may now use
    # new vectors (`curation.trainer`): a wake-up call, as after a label.
    request_training_on_commit(project.pk)
    data = {"rows": result.rows, "stored": result.stored}
    if result.models:
        data["models"] = sorted(result.models)
    if project.vector_dim is not None and upload is vectors_upload:
        data["dim"] = project.vector_dim
    return Response(UploadResultSerializer(data).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(parameters=[PredictionQuerySerializer]),
    post=extend_schema(**_upload_schema(PredictionInSerializer)),
    delete=extend_schema(parameters=[PredictionDeleteQuerySerializer], responses=DeletedSerializer),
)
class PredictionList(generics.ListAPIView):
    """`GET`: the project's imported predictions (`?model=` for one model's), by id.
    `POST`: add or replace predictions (project admins), a JSON array or JSON Lines of
    `PredictionInSerializer` rows, all or nothing. `DELETE ?model=`: remove one model's."""

    serializer_class = PredictionSerializer
    pagination_class = ByIdCursorPagination

    def get_queryset(self) -> QuerySet[PreAnnotation]:
        project = access.get_project_for_user(self.request.user, self.kwargs["pk"])
        query = PredictionQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        rows = PreAnnotation.objects.filter(project=project).select_related("item")
        if "model" in query.validated_data:
            rows = rows.filter(model_name=query.validated_data["model"])
        return rows.only(
            "id", "item__external_id", "model_name", "labels", "scores", "score", "updated_at"
        )

    def post(self, request: Request, pk: int) -> Response:
        return _upload(request, pk, predictions_upload)

    def delete(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        query = PredictionDeleteQuerySerializer(data=request.query_params)
        if not query.is_valid():
            raise ValidationError({"model": ["Name the model whose predictions to delete."]})
        deleted, _ = PreAnnotation.objects.filter(
            project=project, model_name=query.validated_data["model"]
        ).delete()
        return Response({"deleted": deleted})


class VectorList(APIView):
    """`GET`: the project's vector length and how many items have one. `POST`: add or replace
    vectors (project admins), a JSON array or JSON Lines of `VectorInSerializer` rows, all or
    nothing."""

    @extend_schema(responses=VectorSummarySerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk)
        count = ItemVector.objects.filter(project=project).count()
        return Response(VectorSummarySerializer({"dim": project.vector_dim, "count": count}).data)

    @extend_schema(**_upload_schema(VectorInSerializer))
    def post(self, request: Request, pk: int) -> Response:
        return _upload(request, pk, vectors_upload)


class ItemVectorDetail(APIView):
    """`GET items/<id>/vector/`: one item's vector (404 when it has none)."""

    @extend_schema(responses=VectorSerializer)
    def get(self, request: Request, pk: int, item_pk: int) -> Response:
        item = access.get_item_for_user(request.user, pk, item_pk)
        row = ItemVector.objects.filter(item_id=item.pk).values_list("values", flat=True).first()
        if row is None:
            raise Http404("This item has no vector.")
        values = vector_values(row)
        body = {"item": item.external_id, "item_id": item.pk, "dim": len(values), "vector": values}
        return Response(VectorSerializer(body).data)
