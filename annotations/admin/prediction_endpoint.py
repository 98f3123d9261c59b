"""Prediction endpoints in the admin: listed with their status (the auth header never shown),
enabled, disabled or deleted through `annotations.prediction_endpoint`; set up on the project's
Prediction endpoint page or the API, which check the URL."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from annotations.models import PredictionEndpoint
from annotations.prediction_endpoint import endpoint_delete, endpoint_set_enabled


@admin.register(PredictionEndpoint)
class PredictionEndpointAdmin(admin.ModelAdmin):
    list_display = [
        "url",
        "project",
        "enabled",
        "rank_queue",
        "model_version",
        "items_predicted",
        "last_call_at",
        "last_error",
    ]
    list_filter = ["enabled", "rank_queue"]
    search_fields = ["url", "project__name"]
    list_select_related = ["project"]
    fields = [
        "project",
        "url",
        "auth_header_hint",
        "batch_size",
        "timeout_seconds",
        "enabled",
        "rank_queue",
        "model_version",
        "items_predicted",
        "last_call_at",
        "last_success_at",
        "last_latency_ms",
        "last_error",
        "last_error_at",
        "consecutive_failures",
        "next_attempt_at",
        "created_by",
        "created_at",
    ]
    readonly_fields = fields
    actions = ["enable", "disable"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser  # for the actions; every field is read-only

    @admin.display(description="Authorization header")
    def auth_header_hint(self, obj: PredictionEndpoint) -> str:
        return obj.auth_header_hint or "none"

    def _set_enabled(
        self, request: HttpRequest, queryset: QuerySet[PredictionEndpoint], enabled: bool
    ) -> None:
        done = 0
        for endpoint in queryset.select_related("project"):
            try:
                endpoint_set_enabled(endpoint, enabled)
            except ValidationError as exc:  # the URL is no longer allowed
                messages.error(request, f"{endpoint.url}: {'; '.join(exc.messages)}")
            else:
                done += 1
        verb = "enabled" if enabled else "disabled"
        messages.success(request, f"{done} endpoint(s) {verb}.")

    @admin.action(description="Enable the selected endpoints")
    def enable(self, request: HttpRequest, queryset: QuerySet[PredictionEndpoint]) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected endpoints")
    def disable(self, request: HttpRequest, queryset: QuerySet[PredictionEndpoint]) -> None:
        self._set_enabled(request, queryset, False)

    def delete_model(self, request: HttpRequest, obj: PredictionEndpoint) -> None:
        endpoint_delete(obj.project)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[PredictionEndpoint]) -> None:
        for endpoint in queryset.select_related("project"):
            endpoint_delete(endpoint.project)
