"""A project's prediction endpoint over the API (project admins, as on the settings page):
`GET` its settings and status, `PUT` them (create or replace), `DELETE` it. The auth header is
write-only: answers say whether one is set and show its last characters, never the value."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotations import access
from annotations.api.refusals import refused
from annotations.endpoint_models import PredictionEndpoint
from annotations.models import Project
from annotations.prediction_endpoint import (
    BATCH_MAX,
    TIMEOUT_MAX,
    endpoint_delete,
    endpoint_of,
    endpoint_save,
)


class PredictionEndpointSerializer(serializers.ModelSerializer):
    """The settings (the auth header as a hint) and the status of the calls so far."""

    auth_header_set = serializers.SerializerMethodField()
    auth_header_hint = serializers.CharField(
        read_only=True, help_text="The auth header's last characters, or empty."
    )
    model_name = serializers.SerializerMethodField(
        help_text="The model name its predictions are stored under."
    )

    class Meta:
        model = PredictionEndpoint
        fields = [
            "url",
            "auth_header_set",
            "auth_header_hint",
            "batch_size",
            "timeout_seconds",
            "enabled",
            "rank_queue",
            "model_version",
            "model_name",
            "last_call_at",
            "last_success_at",
            "last_error",
            "last_error_at",
            "last_latency_ms",
            "items_predicted",
            "consecutive_failures",
            "next_attempt_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_auth_header_set(self, endpoint: PredictionEndpoint) -> bool:
        return bool(endpoint.auth_header)

    def get_model_name(self, endpoint: PredictionEndpoint) -> str:
        return endpoint.model_name()


class PredictionEndpointWriteSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2000)
    auth_header = serializers.CharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        write_only=True,
        help_text='The Authorization header\'s value, e.g. "Bearer …"; leave out to keep the '
        'stored one, "" to remove it.',
    )
    batch_size = serializers.IntegerField(min_value=1, max_value=BATCH_MAX, default=32)
    timeout_seconds = serializers.IntegerField(min_value=1, max_value=TIMEOUT_MAX, default=30)
    enabled = serializers.BooleanField(default=True)
    rank_queue = serializers.BooleanField(default=True)


def _project(request: Request, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.MANAGE)


class PredictionEndpointDetail(APIView):
    """GET the endpoint (404 when none); PUT {url, auth_header, batch_size, timeout_seconds,
    enabled, rank_queue}: create or replace it (the URL checked now); DELETE it."""

    @extend_schema(responses=PredictionEndpointSerializer)
    def get(self, request: Request, pk: int) -> Response:
        endpoint = endpoint_of(_project(request, pk))
        if endpoint is None:
            raise Http404("This project has no prediction endpoint.")
        return Response(PredictionEndpointSerializer(endpoint).data)

    @extend_schema(
        request=PredictionEndpointWriteSerializer, responses=PredictionEndpointSerializer
    )
    def put(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        body = PredictionEndpointWriteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            endpoint = endpoint_save(project=project, user=request.user, **body.validated_data)
        except DjangoValidationError as exc:
            raise refused(exc) from exc
        return Response(PredictionEndpointSerializer(endpoint).data)

    @extend_schema(responses={204: OpenApiResponse(description="Deleted.")})
    def delete(self, request: Request, pk: int) -> Response:
        if not endpoint_delete(_project(request, pk)):
            raise Http404("This project has no prediction endpoint.")
        return Response(status=status.HTTP_204_NO_CONTENT)
