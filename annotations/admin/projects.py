"""Projects, their label classes, members and model settings."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from annotations import services
from annotations.admin.common import link_if_route, links_html, summarised_delete
from annotations.assignments import assignment_remove
from annotations.gold import gold_rebuild
from annotations.models import (
    Annotation,
    AnnotationRevision,
    Item,
    ItemLease,
    LabelClass,
    Membership,
    Project,
)
from curation.models import ProjectTraining

# --- Projects ---------------------------------------------------------------------------------


class LabelClassFormSet(BaseInlineFormSet):
    """Catches two new classes given the same name or key in one save, which the database
    would otherwise refuse with an error page."""

    def clean(self) -> None:
        super().clean()
        seen_names: set[str] = set()
        seen_keys: set[str] = set()
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data:
                continue
            if self.can_delete and self._should_delete_form(form):
                continue
            name = form.cleaned_data.get("name")
            key = form.cleaned_data.get("key")
            if name and name in seen_names:
                raise ValidationError(f"Two label classes are named {name!r}.")
            if key and key in seen_keys:
                raise ValidationError(f"Two label classes use the key {key!r}.")
            seen_names.add(name)
            if key:
                seen_keys.add(key)


class LabelClassInline(admin.TabularInline):
    model = LabelClass
    formset = LabelClassFormSet
    fields = ["order", "name", "color", "key"]
    ordering = ["order", "id"]
    extra = 0


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]
    extra = 0


class ProjectTrainingInline(admin.StackedInline):
    model = ProjectTraining
    verbose_name = verbose_name_plural = "model in the loop"
    fields = ["strategy", "exploration", "eval_share", "suggestions"]
    can_delete = False
    max_num = 1


def _members_removed(memberships: Iterable[Membership]) -> None:
    """Before memberships go: their assignments and leases, which only members may hold (an
    item assigned to someone who left would wait for them forever)."""
    for m in memberships:
        assignment_remove(project=m.project, users=[m.user])
        ItemLease.objects.filter(project=m.project, user=m.user).delete()


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "item_kind",
        "labeling_mode",
        "overlap",
        "items",
        "labelled",
        "remaining",
        "progress",
    ]
    list_filter = ["item_kind", "labeling_mode", "consensus"]
    search_fields = ["name", "description"]
    inlines = [LabelClassInline, MembershipInline, ProjectTrainingInline]
    readonly_fields = ["items", "labelled", "remaining", "progress", "links", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "description", "instructions"]}),
        ("Labeling", {"fields": ["item_kind", "labeling_mode", "overlap", "serve_partial_first"]}),
        (
            "Review and gold labels",
            {
                "fields": [
                    "review_threshold",
                    "review_model_confidence",
                    "consensus",
                    "quality_threshold",
                ]
            },
        ),
        ("Progress", {"fields": ["items", "labelled", "remaining", "progress", "links"]}),
        (None, {"fields": ["created_at"]}),
    ]
    actions = ["recount_progress", "release_all_leases"]

    @admin.display(description="items", ordering="item_count")
    def items(self, obj: Project) -> int:
        return obj.item_count

    @admin.display(description="labelled", ordering="complete_count")
    def labelled(self, obj: Project) -> int:
        return obj.complete_count

    @admin.display(description="remaining")
    def remaining(self, obj: Project) -> int:
        return obj.remaining_count

    @admin.display(description="progress")
    def progress(self, obj: Project):
        pct = obj.percent_complete
        return format_html(
            '<progress max="100" value="{}" title="{} of {} items labelled">{}%</progress> {}%',
            pct,
            obj.complete_count,
            obj.item_count,
            pct,
            pct,
        )

    @admin.display(description="links")
    def links(self, obj: Project):
        if obj.pk is None:
            return "—"
        items = reverse("admin:annotations_item_changelist") + f"?project__id__exact={obj.pk}"
        reviews = reverse("admin:annotations_review_changelist") + f"?project__id__exact={obj.pk}"
        return links_html(
            [
                ("Items", items),
                ("Reviews", reviews),
                link_if_route("Overview", "project_detail", obj.pk),
                link_if_route("Annotate", "annotate", obj.pk),
                link_if_route("Import", "project_import", obj.pk),
                link_if_route("Export JSONL", "project_export_jsonl", obj.pk),
                link_if_route("Export CSV", "project_export_csv", obj.pk),
                link_if_route("Settings", "project_settings", obj.pk),
                link_if_route("Members", "project_members", obj.pk),
                link_if_route("Assignments", "project_assignments", obj.pk),
            ]
        )

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        if not change:
            obj.save()
            return
        # Never write the counters back from the form's copy: annotators may have moved them
        # since the page was loaded. A new overlap goes through the service, which recounts.
        fields = [
            f.name
            for f in obj._meta.concrete_fields
            if not f.primary_key and f.name not in {"item_count", "complete_count", "overlap"}
        ]
        with transaction.atomic():
            obj.save(update_fields=fields)
            if "overlap" in form.changed_data:
                services.project_set_overlap(obj, obj.overlap)  # rebuilds gold labels too
            elif {"review_threshold", "consensus"} & set(form.changed_data):
                gold_rebuild(obj)  # the review queue follows the new rule at once
        obj.refresh_from_db(fields=["item_count", "complete_count", "overlap"])

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is Membership:
            with transaction.atomic():
                _members_removed(f.instance for f in formset.deleted_forms if f.instance.pk)
                super().save_formset(request, form, formset, change)
            return
        super().save_formset(request, form, formset, change)

    @admin.action(description="Recount progress of the selected projects")
    def recount_progress(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            services.project_recount(project)
        self.message_user(request, f"Recounted {len(queryset)} project(s).", messages.SUCCESS)

    @admin.action(description="Release all leases of the selected projects")
    def release_all_leases(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        released, _ = ItemLease.objects.filter(project__in=queryset).delete()
        self.message_user(request, f"Released {released} lease(s).", messages.SUCCESS)

    def get_deleted_objects(self, objs, request):
        projects = list(objs)
        ids = [p.pk for p in projects]
        counts = {
            Project: len(projects),
            LabelClass: LabelClass.objects.filter(project__in=ids).count(),
            Membership: Membership.objects.filter(project__in=ids).count(),
            Item: sum(p.item_count for p in projects),
            Annotation: Annotation.objects.filter(project__in=ids).count(),
            AnnotationRevision: AnnotationRevision.objects.filter(
                annotation__project__in=ids
            ).count(),
            ItemLease: ItemLease.objects.filter(project__in=ids).count(),
        }
        return summarised_delete(request, counts)

    def delete_model(self, request: HttpRequest, obj: Project) -> None:
        self.delete_queryset(request, Project.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        services.projects_delete(queryset)


# --- Members, classes, leases -----------------------------------------------------------------


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    list_editable = ["role"]
    search_fields = ["user__username", "user__email", "project__name"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        self.delete_queryset(request, Membership.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        with transaction.atomic():
            _members_removed(queryset.select_related("project", "user"))
            queryset.delete()


@admin.register(LabelClass)
class LabelClassAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "swatch", "key", "order"]
    list_filter = ["project"]
    search_fields = ["name", "project__name"]
    list_select_related = ["project"]
    autocomplete_fields = ["project"]
    ordering = ["project__name", "order", "id"]

    @admin.display(description="colour")
    def swatch(self, obj: LabelClass):
        return format_html(
            '<span style="display:inline-block;width:1em;height:1em;background:{}"></span> {}',
            obj.color,
            obj.color,
        )
