"""Webhooks over the API (project admins, as on the page): list and add, one hook (read,
change, delete), and its deliveries. The secret is in the answer to the POST that makes it
and to a PATCH with `rotate_secret`, never in a GET."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.models import Project
from annotations.webhooks.models import Webhook, WebhookDelivery, WebhookEvent
from annotations.webhooks.services import (
    deliveries_of,
    webhook_create,
    webhook_delete,
    webhook_rotate_secret,
    webhook_update,
)


class WebhookSerializer(serializers.ModelSerializer):
    class Meta:
        model = Webhook
        fields = [
            "id",
            "url",
            "description",
            "events",
            "active",
            "disabled_reason",
            "consecutive_failures",
            "created_at",
            "last_delivery_at",
        ]


class WebhookSecretSerializer(WebhookSerializer):
    """A hook with its signing secret: the answer to its creation or a secret rotation."""

    secret = serializers.CharField(required=False, help_text="Only when made or rotated.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]


class WebhookWriteSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    description = serializers.CharField(max_length=200, required=False, allow_blank=True)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.values), required=False
    )
    active = serializers.BooleanField(required=False)
    rotate_secret = serializers.BooleanField(required=False, default=False)


class AttemptSerializer(serializers.Serializer):
    started_at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField()
    error = serializers.CharField()
    url = serializers.CharField()


class DeliverySerializer(serializers.ModelSerializer):
    attempt_log = AttemptSerializer(many=True)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "event_id",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
            "delivered_at",
            "last_status_code",
            "last_error",
            "last_latency_ms",
            "payload",
            "attempt_log",
        ]


def _project(request: Request, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.MANAGE)


def _hook(project: Project, hook_pk: int) -> Webhook:
    hook = Webhook.objects.filter(project=project, pk=hook_pk).first()
    if hook is None:
        raise Http404("No such webhook in this project.")
    return hook


def _refused(exc: DjangoValidationError) -> ValidationError:
    return ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)


class WebhookList(APIView):
    """GET: the project's hooks. POST {url, events, description}: add one (201, with its
    `secret`, shown this once)."""

    @extend_schema(responses=WebhookSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        hooks = Webhook.objects.filter(project=project).order_by("id")
        return Response(WebhookSerializer(hooks, many=True).data)

    @extend_schema(request=WebhookWriteSerializer, responses={201: WebhookSecretSerializer})
    def post(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        body = WebhookWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            hook = webhook_create(
                project=project,
                url=data.get("url", ""),
                events=data.get("events", []),
                description=data.get("description", ""),
                user=request.user,
            )
        except DjangoValidationError as exc:
            raise _refused(exc) from exc
        answer = WebhookSerializer(hook).data | {"secret": hook.secret}
        return Response(answer, status=status.HTTP_201_CREATED)


class WebhookDetail(APIView):
    """GET one hook; PATCH {url, events, description, active, rotate_secret}; DELETE."""

    @extend_schema(responses=WebhookSerializer)
    def get(self, request: Request, pk: int, hook_pk: int) -> Response:
        hook = _hook(_project(request, pk), hook_pk)
        return Response(WebhookSerializer(hook).data)

    @extend_schema(
        request=WebhookWriteSerializer,
        responses=OpenApiResponse(WebhookSecretSerializer, description="`secret` if rotated."),
    )
    def patch(self, request: Request, pk: int, hook_pk: int) -> Response:
        hook = _hook(_project(request, pk), hook_pk)
        body = WebhookWriteSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        rotate = data.pop("rotate_secret", False)
        try:
            hook = webhook_update(hook, **data)
        except DjangoValidationError as exc:
            raise _refused(exc) from exc
        answer = WebhookSerializer(hook).data
        if rotate:
            answer["secret"] = webhook_rotate_secret(hook)
        return Response(answer)

    @extend_schema(responses={204: OpenApiResponse(description="Deleted.")})
    def delete(self, request: Request, pk: int, hook_pk: int) -> Response:
        webhook_delete(_hook(_project(request, pk), hook_pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookDeliveries(APIView):
    """GET: the hook's newest deliveries (`limit`, default 50, at most 200), each with its body
    and every attempt (time, status code, latency, error)."""

    @extend_schema(
        parameters=[OpenApiParameter("limit", OpenApiTypes.INT, description="1–200, default 50")],
        responses=DeliverySerializer(many=True),
    )
    def get(self, request: Request, pk: int, hook_pk: int) -> Response:
        hook = _hook(_project(request, pk), hook_pk)
        try:
            limit = max(1, min(int(request.query_params.get("limit", 50)), 200))
        except ValueError:
            raise ValidationError({"limit": "Give a number of deliveries."}) from None
        return Response(DeliverySerializer(deliveries_of(hook, limit=limit), many=True).data)
