"""API endpoints. Each one resolves the project through `access.get_project_for_user`
(404 for non-members, 403 for a role too low) and leaves the work to the services."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import OuterRef, Prefetch, QuerySet, Subquery, Value
from django.http import FileResponse, Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access, queue, services
from annotations.api.refusals import refused
from annotations.api.schema import BINARY, VALIDATION_ERROR
from annotations.api.serializers import (
    AnnotationSerializer,
    AnnotationSubmitSerializer,
    ItemSerializer,
    NextItemsQuerySerializer,
    ProjectCreateSerializer,
    ProjectSerializer,
    ProjectSettingsSerializer,
)
from annotations.api.shapes import AgreementSerializer, NextItemsSerializer, QualitySerializer
from annotations.models import Annotation, Item, LabelClass, Membership, Project
from annotations.project_settings import project_update
from annotations.project_setup import ClassSpec, project_create
from annotations.views.media import CONTENT_TYPES, serve_item_image
from curation.models import ProjectTraining
from curation.services import agreement_report, quality_report


class ByIdCursorPagination(CursorPagination):
    """Stable pages over tables that grow while they are read: ordered by primary key."""

    ordering = "id"
    page_size_query_param = "page_size"
    max_page_size = 1000
    invalid_cursor_message = "Invalid cursor: follow the next/previous links of a page."

    def decode_cursor(self, request: Request) -> Cursor | None:
        """A cursor that is not one this API made is a bad request (400), never a 500: DRF
        checks the encoding (and answers 404), but not that the position is an id."""
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": [self.invalid_cursor_message]}) from None
        if cursor is not None and cursor.position is not None:
            try:
                position = int(cursor.position)
            except ValueError:
                position = -1
            if not 0 <= position < 2**63:  # a bigint primary key
                raise ValidationError({"cursor": [self.invalid_cursor_message]})
        return cursor


class ProjectList(generics.ListAPIView):
    """GET: the projects the user is a member of, with their role, progress and label classes.
    POST: create a project with its classes, the caller its project admin (site admins and
    users with the "Can add project" permission; 403 for others)."""

    serializer_class = ProjectSerializer
    pagination_class = ByIdCursorPagination

    @extend_schema(request=ProjectCreateSerializer, responses={201: ProjectSerializer})
    def post(self, request: Request) -> Response:
        if not access.can_create_projects(request.user):
            raise PermissionDenied("You may not create projects: ask a site admin.")
        body = ProjectCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        classes = [ClassSpec(**c) for c in data.pop("classes")]
        try:
            project = project_create(**data, classes=classes, creator=request.user)
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        project.user_role = Membership.Role.ADMIN
        data = ProjectSerializer(project, context={"request": request}).data
        return Response(data, status=status.HTTP_201_CREATED)

    def get_queryset(self) -> QuerySet[Project]:
        role = Membership.objects.filter(project=OuterRef("pk"), user=self.request.user)
        user_role = (
            Value(Membership.Role.ADMIN)  # a site admin acts as project admin everywhere
            if access.is_site_admin(self.request.user)
            else Subquery(role.values("role")[:1])
        )
        return (
            access.projects_for_user(self.request.user)
            .annotate(user_role=user_role)
            .prefetch_related(
                Prefetch("label_classes", queryset=LabelClass.objects.order_by("order", "id"))
            )
        )


class ProjectDetail(APIView):
    """GET: the project. PATCH (project admins): any of its settings, as the settings page
    saves them (`project_settings.project_update`); answers every setting."""

    @extend_schema(responses=ProjectSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk)
        return Response(ProjectSerializer(project, context={"request": request}).data)

    @extend_schema(request=ProjectSettingsSerializer, responses=ProjectSettingsSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        body = ProjectSettingsSerializer(project, data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        values = dict(body.validated_data)
        training = values.pop("training_settings", None)
        try:
            project_update(project=project, values=values, training=training)
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(ProjectSettingsSerializer(_with_training(project)).data)


def _with_training(project: Project) -> Project:
    project.refresh_from_db()
    project.training_settings = ProjectTraining.objects.filter(
        project=project
    ).first() or ProjectTraining(project=project)
    return project


class Agreement(APIView):
    """Inter-annotator agreement of the project (reviewers and project admins): per-class for
    multi-label projects; coefficients that are undefined for the answers so far are null."""

    @extend_schema(responses=AgreementSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.EXPORT)
        return Response(agreement_report(project))


class Quality(APIView):
    """The project's quality report (reviewers and project admins): the agreement above, each
    annotator's accuracy against adjudicated gold labels and leave-one-out agreement, who is
    below the project's quality threshold, gold labels by source and review counts."""

    @extend_schema(responses=QualitySerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
        return Response(quality_report(project))


class ItemList(generics.ListAPIView):
    """All items of a project, in id order, a cursor page at a time."""

    serializer_class = ItemSerializer
    pagination_class = ByIdCursorPagination

    def get_queryset(self) -> QuerySet[Item]:
        project = access.get_project_for_user(self.request.user, self.kwargs["pk"])
        return Item.objects.filter(project=project)


class NextItems(APIView):
    """Lease and return the next items for the requesting annotator. Calling again while the
    leases are live returns the same items, so a retried request loses nothing."""

    @extend_schema(parameters=[NextItemsQuerySerializer], responses=NextItemsSerializer)
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
        query = NextItemsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        items = queue.next_items(project=project, user=request.user, count=query.data["count"])
        data = ItemSerializer(items, many=True, context={"request": request}).data
        return Response({"lease_seconds": settings.LEASE_SECONDS, "results": data})


class AnnotationList(generics.ListAPIView):
    """GET: every annotation of the project for reviewers and project admins, an annotator's
    own otherwise. POST: submit an answer (idempotent per `client_uuid`) to an item the queue
    handed out (`next/`), or edit one's own; 409 for any other item."""

    serializer_class = AnnotationSerializer
    pagination_class = ByIdCursorPagination

    def get_queryset(self) -> QuerySet[Annotation]:
        project = access.get_project_for_user(self.request.user, self.kwargs["pk"])
        qs = Annotation.objects.filter(project=project).select_related("item", "annotator")
        if not access.can(project, access.EXPORT):
            qs = qs.filter(annotator=self.request.user)
        return qs

    @extend_schema(
        request=AnnotationSubmitSerializer,
        responses={
            200: OpenApiResponse(AnnotationSerializer, description="An edit, or a retry."),
            201: AnnotationSerializer,
            409: OpenApiResponse(
                VALIDATION_ERROR, description="Not this annotator's item to answer, with why."
            ),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
        body = AnnotationSubmitSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        item = Item.objects.filter(project=project, pk=body.validated_data["item"]).first()
        if item is None:
            raise Http404("No such item in this project.")
        item.project = project
        try:
            result = services.annotation_submit(
                item=item,
                annotator=request.user,
                labels=body.validated_data["labels"],
                skipped=body.validated_data["skipped"],
                time_spent_ms=body.validated_data["time_spent_ms"],
                client_uuid=body.validated_data["client_uuid"],
            )
        except services.SubmissionRefused as exc:
            # Not a bad request: the item is not (or no longer) this annotator's to answer.
            return Response(exc.message_dict, status=status.HTTP_409_CONFLICT)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        data = AnnotationSerializer(result.annotation, context={"request": request}).data
        code = status.HTTP_201_CREATED if result.created else status.HTTP_200_OK
        return Response(data, status=code)


class _AnyAccept(BaseContentNegotiation):
    """The image endpoint answers with the file whatever the client's Accept header says
    (an <img> asks for image/*, which no API renderer offers)."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class ItemImage(APIView):
    """An item's image, for API clients (token auth); same checks as the annotate page's."""

    content_negotiation_class = _AnyAccept

    @extend_schema(responses={(200, kind): BINARY for kind in CONTENT_TYPES.values()})
    def get(self, request: Request, pk: int, item_pk: int) -> FileResponse:
        return serve_item_image(access.get_item_for_user(request.user, pk, item_pk))
