"""A project's label classes: list (members), add, change and delete (its project admins),
each through `annotations.label_classes`, so a rename rewrites the stored answers and a class
in use is retired rather than deleted."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.refusals import refused
from annotations.api.serializers import (
    LabelClassCreateSerializer,
    LabelClassDetailSerializer,
    LabelClassUpdateSerializer,
)
from annotations.label_classes import label_class_add, label_class_change, label_class_delete
from annotations.models import LabelClass, Project


def _label_class(project: Project, class_id: int) -> LabelClass:
    label_class = LabelClass.objects.filter(project=project, pk=class_id).first()
    if label_class is None:
        raise Http404("No such label class in this project.")
    label_class.project = project
    return label_class


class LabelClassList(APIView):
    """GET: the classes in schema order (every member). POST: add one at the end (project
    admins)."""

    serializer_class = LabelClassCreateSerializer

    @extend_schema(responses=LabelClassDetailSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk)
        classes = LabelClass.objects.filter(project=project).order_by("order", "id")
        return Response(LabelClassDetailSerializer(classes, many=True).data)

    @extend_schema(request=LabelClassCreateSerializer, responses={201: LabelClassDetailSerializer})
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        body = LabelClassCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            added = label_class_add(project=project, **body.validated_data)
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(LabelClassDetailSerializer(added).data, status=status.HTTP_201_CREATED)


class LabelClassDetail(APIView):
    """PATCH: rename, recolour, re-key, move (`order`: the new position) or retire/restore a
    class, all or nothing. DELETE: a class no stored data uses (else 400: retire it)."""

    serializer_class = LabelClassUpdateSerializer

    @extend_schema(responses=LabelClassDetailSerializer)
    def get(self, request: Request, pk: int, class_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk)
        return Response(LabelClassDetailSerializer(_label_class(project, class_id)).data)

    @extend_schema(request=LabelClassUpdateSerializer, responses=LabelClassDetailSerializer)
    def patch(self, request: Request, pk: int, class_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        label_class = _label_class(project, class_id)
        body = LabelClassUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        if "order" in data:
            data["position"] = data.pop("order")
        try:
            label_class_change(label_class=label_class, **data)
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        label_class.refresh_from_db()
        return Response(LabelClassDetailSerializer(label_class).data)

    @extend_schema(responses={204: OpenApiResponse(description="Deleted.")})
    def delete(self, request: Request, pk: int, class_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        try:
            label_class_delete(label_class=_label_class(project, class_id))
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
