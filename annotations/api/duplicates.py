"""The duplicate groups the duplicates analysis found, for reviewers and project admins:
`GET …/duplicates/` lists them with their members (`?conflicting=1` for those whose gold
labels differ), `POST …/duplicates/review/` sends conflicting groups to review."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.shapes import DuplicatesSentSerializer
from annotations.api.views import ByIdCursorPagination
from curation.dataset_models import DuplicateGroup
from curation.duplicate_review import duplicate_groups, duplicates_to_review, group_members


class DuplicateMemberSerializer(serializers.Serializer):
    item = serializers.IntegerField()
    external_id = serializers.CharField()
    similarity = serializers.FloatField(allow_null=True)
    gold = serializers.ListField(child=serializers.CharField(), allow_null=True)


class DuplicateGroupSerializer(serializers.ModelSerializer):
    members = serializers.SerializerMethodField()

    class Meta:
        model = DuplicateGroup
        fields = ["id", "kind", "size", "conflicting", "members"]

    @extend_schema_field(DuplicateMemberSerializer(many=True))
    def get_members(self, group: DuplicateGroup) -> list[dict]:
        members = self.context["members"].get(group.pk, [])
        return [
            {
                "item": m.item_id,
                "external_id": m.external_id,
                "similarity": m.similarity,
                "gold": m.gold,
            }
            for m in members
        ]


@extend_schema_view(
    get=extend_schema(
        parameters=[
            OpenApiParameter("conflicting", OpenApiTypes.STR, enum=["", "0", "1", "true", "false"])
        ]
    )
)
class DuplicateGroupList(generics.ListAPIView):
    """The project's duplicate groups in id order, each with its members and their gold labels."""

    serializer_class = DuplicateGroupSerializer
    pagination_class = ByIdCursorPagination

    def get_queryset(self) -> QuerySet[DuplicateGroup]:
        project = access.get_project_for_user(
            self.request.user, self.kwargs["pk"], allowed=access.REVIEW
        )
        wanted = self.request.query_params.get("conflicting")
        if wanted not in (None, "", "0", "1", "true", "false"):
            raise ValidationError({"conflicting": "Use 1 (only conflicting groups) or 0."})
        conflicting = None if not wanted else wanted in ("1", "true")
        return duplicate_groups(project, conflicting=conflicting)

    def list(self, request: Request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        members = group_members([g.pk for g in page])
        data = DuplicateGroupSerializer(page, many=True, context={"members": members}).data
        return self.get_paginated_response(data)


class ReviewRequest(serializers.Serializer):
    groups = serializers.ListField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        max_length=10_000,
        help_text="Group ids; default: every conflicting group.",
    )


class DuplicatesToReview(APIView):
    """Send the members of conflicting groups (all, or those of `groups`) to review."""

    @extend_schema(request=ReviewRequest, responses=DuplicatesSentSerializer)
    def post(self, request: Request, pk: int) -> Response:
        project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
        body = ReviewRequest(data=request.data)
        body.is_valid(raise_exception=True)
        sent = duplicates_to_review(
            project=project, user=request.user, group_ids=body.validated_data.get("groups")
        )
        return Response({"sent_to_review": sent})
