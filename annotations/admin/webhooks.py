"""Webhooks in the admin: listed and opened (the secret never shown), enabled, disabled, sent a
test event or deleted through `annotations.webhooks.services`; added on the project's Webhooks
page, which shows the new secret once. Deliveries and their attempts are read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from annotations.admin.common import ReadOnlyAdmin
from annotations.models import Webhook, WebhookAttempt, WebhookDelivery
from annotations.webhooks.services import (
    delivery_redeliver,
    webhook_delete,
    webhook_ping,
    webhook_update,
)


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["url", "project", "events", "active", "consecutive_failures", "created_at"]
    list_filter = ["active", "project"]
    search_fields = ["url", "description"]
    list_select_related = ["project"]
    fields = [
        "project",
        "url",
        "description",
        "events",
        "active",
        "disabled_reason",
        "consecutive_failures",
        "created_by",
        "created_at",
        "last_delivery_at",
    ]
    readonly_fields = fields
    actions = ["enable", "disable", "send_test_event"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser  # for the actions; every field is read-only

    @admin.action(description="Enable the selected webhooks")
    def enable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for hook in queryset:
            webhook_update(hook, active=True)
        messages.success(request, f"{len(queryset)} webhook(s) enabled.")

    @admin.action(description="Disable the selected webhooks")
    def disable(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for hook in queryset:
            webhook_update(hook, active=False)
        messages.success(request, f"{len(queryset)} webhook(s) disabled.")

    @admin.action(description="Send a test event")
    def send_test_event(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for hook in queryset.select_related("project"):
            webhook_ping(hook)
        messages.success(request, f"Test event queued for {len(queryset)} webhook(s).")

    def delete_model(self, request: HttpRequest, obj: Webhook) -> None:
        webhook_delete(obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Webhook]) -> None:
        for hook in queryset:
            webhook_delete(hook)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ["started_at", "status_code", "latency_ms", "error", "url"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "event",
        "webhook",
        "status",
        "attempts",
        "last_status_code",
        "last_latency_ms",
        "created_at",
    ]
    list_filter = ["status", "event"]
    list_select_related = ["webhook"]
    show_full_result_count = False
    fields = [
        "webhook",
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
    ]
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["redeliver"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return request.user.is_superuser and obj is None  # the action only

    @admin.action(description="Redeliver the selected deliveries")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        for delivery in queryset:
            delivery_redeliver(delivery)
        messages.success(request, f"{len(queryset)} deliveries queued again.")
