"""Review endpoints for reviewers and project admins: the review queue, claims, decisions,
reopenings and flags. The same services as the reviewer page; conflicts answer 409 with the
reason (who decided, or who holds the item)."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Prefetch, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.schema import ERROR
from annotations.api.views import ByIdCursorPagination
from annotations.models import Annotation, Item, Project, Review, ReviewEvent
from annotations.review import (
    ReviewConflict,
    review_decide,
    review_flag,
    review_next,
    review_reopen,
)


class _AnswerSerializer(serializers.ModelSerializer):
    annotator = serializers.CharField(source="annotator.get_username", read_only=True)

    class Meta:
        model = Annotation
        fields = ["annotator", "labels", "updated_at"]
        read_only_fields = fields


class ReviewEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor.get_username", read_only=True)

    class Meta:
        model = ReviewEvent
        fields = ["action", "actor", "labels", "chosen", "candidates", "comment", "created_at"]
        read_only_fields = fields


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


class ReviewSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="item.external_id", read_only=True)
    answers = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()
    claimed_by = serializers.SerializerMethodField()
    flagged_by = serializers.SerializerMethodField()

    class Meta:
        model = Review
        fields = [
            "id",
            "item",
            "external_id",
            "status",
            "reasons",
            "answers",
            "model_labels",
            "model_confidence",
            "flagged_by",
            "flag_note",
            "claimed_by",
            "claimed_until",
            "labels",
            "decided_by",
            "decided_at",
            "comment",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(_AnswerSerializer(many=True))
    def get_answers(self, review: Review) -> list[dict]:
        rows = [a for a in review.item.annotations.all() if not a.skipped]
        return _AnswerSerializer(rows, many=True).data

    def get_decided_by(self, review: Review) -> str | None:
        return _username(review.decided_by)

    def get_claimed_by(self, review: Review) -> str | None:
        return _username(review.claimed_by)

    def get_flagged_by(self, review: Review) -> str | None:
        return _username(review.flagged_by)


class ReviewDetailSerializer(ReviewSerializer):
    events = ReviewEventSerializer(many=True, read_only=True)

    class Meta(ReviewSerializer.Meta):
        fields = [*ReviewSerializer.Meta.fields, "events"]
        read_only_fields = fields


class DecisionSerializer(serializers.Serializer):
    labels = serializers.ListField(child=serializers.CharField(), allow_empty=True)
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    client_uuid = serializers.UUIDField()


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


class FlagSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")


def _reviews(project: Project) -> QuerySet[Review]:
    answers = Prefetch(
        "item__annotations",
        queryset=Annotation.objects.select_related("annotator").order_by("created_at", "id"),
    )
    return (
        Review.objects.filter(project=project)
        .select_related("item", "decided_by", "claimed_by", "flagged_by")
        .prefetch_related(answers)
    )


def _review_project(request: Request, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.REVIEW)


CONFLICT = OpenApiResponse(ERROR, description="Decided already, or another reviewer holds it.")


def _conflict(exc: ReviewConflict) -> Response:
    return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)


@extend_schema_view(
    get=extend_schema(
        parameters=[OpenApiParameter("status", OpenApiTypes.STR, enum=list(Review.Status.values))]
    )
)
class ReviewList(generics.ListAPIView):
    """The project's reviews, `?status=open` or `?status=decided`, in id order."""

    serializer_class = ReviewSerializer
    pagination_class = ByIdCursorPagination

    def get_queryset(self) -> QuerySet[Review]:
        project = _review_project(self.request, self.kwargs["pk"])
        qs = _reviews(project)
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in Review.Status.values:
                raise ValidationError({"status": f"Use one of {', '.join(Review.Status.values)}."})
            qs = qs.filter(status=wanted)
        return qs


class ReviewDetail(APIView):
    @extend_schema(responses=ReviewDetailSerializer)
    def get(self, request: Request, pk: int, review_pk: int) -> Response:
        project = _review_project(request, pk)
        review = _reviews(project).prefetch_related("events__actor").filter(pk=review_pk).first()
        if review is None:
            raise Http404("No such review.")
        return Response(ReviewDetailSerializer(review).data)


class ReviewNext(APIView):
    """Claim the next review for the requesting reviewer (their own live claim first); 204 when
    there is nothing to review."""

    @extend_schema(
        request=None,
        responses={
            200: ReviewSerializer,
            204: OpenApiResponse(description="Nothing to review."),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        project = _review_project(request, pk)
        review = review_next(project=project, reviewer=request.user)
        if review is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(ReviewSerializer(_reviews(project).get(pk=review.pk)).data)


class ReviewDecision(APIView):
    """Decide the gold label. Idempotent per `client_uuid`; 409 when the item was decided
    already or another reviewer holds it."""

    @extend_schema(request=DecisionSerializer, responses={200: ReviewSerializer, 409: CONFLICT})
    def post(self, request: Request, pk: int, review_pk: int) -> Response:
        project = _review_project(request, pk)
        body = DecisionSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            review_decide(
                project=project,
                review_id=review_pk,
                reviewer=request.user,
                labels=body.validated_data["labels"],
                comment=body.validated_data["comment"],
                client_uuid=body.validated_data["client_uuid"],
            )
        except Review.DoesNotExist as exc:
            raise Http404("No such review.") from exc
        except ReviewConflict as exc:
            return _conflict(exc)
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from exc
        return Response(ReviewSerializer(_reviews(project).get(pk=review_pk)).data)


class ReviewReopen(APIView):
    @extend_schema(request=CommentSerializer, responses={200: ReviewSerializer, 409: CONFLICT})
    def post(self, request: Request, pk: int, review_pk: int) -> Response:
        project = _review_project(request, pk)
        body = CommentSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            review_reopen(
                project=project,
                review_id=review_pk,
                user=request.user,
                comment=body.validated_data["comment"],
            )
        except Review.DoesNotExist as exc:
            raise Http404("No such review.") from exc
        except ReviewConflict as exc:
            return _conflict(exc)
        return Response(ReviewSerializer(_reviews(project).get(pk=review_pk)).data)


class ItemFlag(APIView):
    """Send an item to review by hand."""

    @extend_schema(request=FlagSerializer, responses={201: ReviewSerializer})
    def post(self, request: Request, pk: int, item_pk: int) -> Response:
        project = _review_project(request, pk)
        item = Item.objects.filter(project=project, pk=item_pk).first()
        if item is None:
            raise Http404("No such item.")
        item.project = project
        body = FlagSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        review = review_flag(item=item, user=request.user, note=body.validated_data["note"])
        data = ReviewSerializer(_reviews(project).get(pk=review.pk)).data
        return Response(data, status=status.HTTP_201_CREATED)
