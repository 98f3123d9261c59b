"""Assignments, gold labels and reviews: written by the services, listed here."""

from __future__ import annotations

from django.contrib import admin
from django.db import connection
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest

from annotations.admin.common import ReadOnlyAdmin
from annotations.assignments import assignments_delete
from annotations.models import (
    Annotation,
    GoldLabel,
    ItemAssignment,
    Review,
    ReviewEvent,
)

# --- Assignments, gold labels and reviews -----------------------------------------------------


@admin.register(ItemAssignment)
class ItemAssignmentAdmin(admin.ModelAdmin):
    """Assignments are made on the project's assignments page (`assignment_create` keeps the
    items' answer targets and the project's progress exact); here they are listed and removed."""

    list_display = ["item", "user", "project", "answered", "assigned_by", "created_at"]
    list_filter = ["project"]
    search_fields = ["item__external_id", "user__username"]
    list_select_related = ["item", "user", "project", "assigned_by"]
    show_full_result_count = False
    fields = ["project", "item", "user", "answered", "assigned_by", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[ItemAssignment]:
        answer = Annotation.objects.filter(
            item=OuterRef("item"), annotator=OuterRef("user"), skipped=False
        )
        return super().get_queryset(request).annotate(_answered=Exists(answer))

    @admin.display(boolean=True, description="answered", ordering="_answered")
    def answered(self, obj: ItemAssignment) -> bool:
        return obj._answered

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ItemAssignment) -> None:
        assignments_delete(ItemAssignment.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ItemAssignment]) -> None:
        assignments_delete(queryset)


@admin.register(GoldLabel)
class GoldLabelAdmin(ReadOnlyAdmin):
    list_display = ["item", "project", "label_list", "source", "agreement", "answers"]
    list_display += ["updated_at"]
    list_filter = ["source", "project"]
    search_fields = ["item__external_id"]
    list_select_related = ["item", "project"]
    show_full_result_count = False

    @admin.display(description="labels")
    def label_list(self, obj: GoldLabel) -> str:
        return "—" if obj.labels is None else ", ".join(obj.labels) or "(none)"


class ReviewReasonFilter(admin.SimpleListFilter):
    title = "reason"
    parameter_name = "reason"

    def lookups(self, request, model_admin):
        return Review.Reason.choices

    def queryset(self, request, queryset):
        value = self.value()
        if value not in Review.Reason.values:
            return queryset
        if connection.features.supports_json_field_contains:
            return queryset.filter(reasons__contains=[value])
        return queryset.filter(reasons__icontains=f'"{value}"')


class ReviewEventInline(admin.TabularInline):
    model = ReviewEvent
    fields = ["created_at", "actor", "action", "labels", "chosen", "comment"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    """The review queue and its decisions, with their log. Reviewers work on the review page;
    decisions go through `annotations.review`, which keeps the gold labels in step."""

    list_display = ["item", "project", "status", "reason_list", "claimed_by", "decided_by"]
    list_display += ["decided_at", "created_at"]
    list_filter = ["status", ReviewReasonFilter, "project"]
    search_fields = ["item__external_id", "flag_note", "comment"]
    list_select_related = ["item", "project", "claimed_by", "decided_by"]
    show_full_result_count = False
    inlines = [ReviewEventInline]

    @admin.display(description="reasons")
    def reason_list(self, obj: Review) -> str:
        names = dict(Review.Reason.choices)
        return ", ".join(names.get(r, r) for r in obj.reasons) or "—"


@admin.register(ReviewEvent)
class ReviewEventAdmin(ReadOnlyAdmin):
    list_display = ["review", "actor", "action", "labels", "chosen", "created_at"]
    list_filter = ["action", "review__project"]
    search_fields = ["review__item__external_id", "actor__username", "comment"]
    list_select_related = ["review__item", "actor"]
    show_full_result_count = False
