"""A project's members, for its project admins: list, add, change a role, remove, through
`annotations.members` (a project keeps at least one project admin; a member removed loses their
assignments and leases). Members are addressed by their user id."""

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
from annotations.api.serializers import MemberAddSerializer, MemberRoleSerializer, MemberSerializer
from annotations.members import membership_add, membership_remove, membership_set_role
from annotations.models import Membership, Project


def _membership(project: Project, user_id: int) -> Membership:
    membership = (
        Membership.objects.filter(project=project, user_id=user_id).select_related("user").first()
    )
    if membership is None:
        raise Http404("This user is not a member of the project.")
    return membership


class MemberList(APIView):
    """GET: the members with their roles. POST: add an existing user (username or email)."""

    serializer_class = MemberAddSerializer

    @extend_schema(responses=MemberSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        members = (
            Membership.objects.filter(project=project)
            .select_related("user")
            .order_by("user__username")
        )
        return Response(MemberSerializer(members, many=True).data)

    @extend_schema(request=MemberAddSerializer, responses={201: MemberSerializer})
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        body = MemberAddSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            member = membership_add(
                project=project,
                username_or_email=body.validated_data["user"],
                role=body.validated_data["role"],
            )
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(MemberSerializer(member).data, status=status.HTTP_201_CREATED)


class MemberDetail(APIView):
    """PATCH: change the member's role. DELETE: remove them. The last project admin can do
    neither (400)."""

    serializer_class = MemberRoleSerializer

    @extend_schema(responses=MemberSerializer)
    def get(self, request: Request, pk: int, user_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        return Response(MemberSerializer(_membership(project, user_id)).data)

    @extend_schema(request=MemberRoleSerializer, responses=MemberSerializer)
    def patch(self, request: Request, pk: int, user_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        membership = _membership(project, user_id)
        body = MemberRoleSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            membership = membership_set_role(
                membership=membership, role=body.validated_data["role"]
            )
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(MemberSerializer(membership).data)

    @extend_schema(responses={204: OpenApiResponse(description="Removed.")})
    def delete(self, request: Request, pk: int, user_id: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
        try:
            membership_remove(membership=_membership(project, user_id))
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(status=status.HTTP_204_NO_CONTENT)
