"""Django admin for projects, their schema and members, items, leases and annotations.

Writes that touch progress go through the services (`project_set_overlap`, `project_recount`,
`add_items_counted`, `assignments_delete`) so the counters on Project and Item stay exact
whatever the admin does; gold labels, reviews and their log are written by the review services
only, so they are read-only here.
Every value shown comes from user input somewhere, so HTML is only ever built with
`format_html` (which escapes its arguments). The item pages stay fast at a million rows:
no full counts, an estimated count for the unfiltered list, and summarised delete pages.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.forms import BaseInlineFormSet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from annotations import services
from annotations.assignments import assignment_remove, assignments_delete
from annotations.gold import gold_rebuild
from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    ItemAssignment,
    ItemLease,
    LabelClass,
    Membership,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import review_flag
from annotations.views.media import serve_item_image
from curation.models import ProjectTraining

admin.site.site_header = "dataprepops administration"
admin.site.site_title = "dataprepops admin"

# Deleting more objects than this shows counts on the confirmation page instead of listing
# every object (which would never finish rendering for a large project).
_LIST_DELETED_UP_TO = 100
# Items flagged by one admin action: each is a small transaction of its own.
_FLAG_UP_TO = 1000


def _link_if_route(label: str, name: str, *args) -> tuple[str, str] | None:
    """(label, url) for a route, or None while that route does not exist (yet)."""
    try:
        return label, reverse(name, args=args)
    except NoReverseMatch:
        return None


def _links(links: Iterable[tuple[str, str] | None]):
    present = [x for x in links if x is not None]
    if not present:
        return "—"
    return format_html_join(" · ", '<a href="{}">{}</a>', ((url, lbl) for lbl, url in present))


def _summarised_delete(
    request: HttpRequest, counts: dict[type, int]
) -> tuple[list[str], dict[str, int], set[str], list[str]]:
    """What `ModelAdmin.get_deleted_objects` returns, as counts per model rather than a list
    of every object. Staff without the delete permission of a model involved are refused."""
    summary, model_count, perms_needed = [], {}, set()
    for model, n in counts.items():
        if not n:
            continue
        opts = model._meta
        name = opts.verbose_name if n == 1 else opts.verbose_name_plural
        summary.append(f"{n} {name}")
        model_count[opts.verbose_name_plural] = n
        if not request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}"):
            perms_needed.add(opts.verbose_name)
    return summary, model_count, perms_needed, []


def _project_ids(queryset: QuerySet) -> set[int]:
    return set(queryset.order_by().values_list("project_id", flat=True).distinct())


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
        return _links(
            [
                ("Items", items),
                ("Reviews", reviews),
                _link_if_route("Overview", "project_detail", obj.pk),
                _link_if_route("Annotate", "annotate", obj.pk),
                _link_if_route("Import", "project_import", obj.pk),
                _link_if_route("Export JSONL", "project_export_jsonl", obj.pk),
                _link_if_route("Export CSV", "project_export_csv", obj.pk),
                _link_if_route("Settings", "project_settings", obj.pk),
                _link_if_route("Members", "project_members", obj.pk),
                _link_if_route("Assignments", "project_assignments", obj.pk),
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
        return _summarised_delete(request, counts)

    def delete_model(self, request: HttpRequest, obj: Project) -> None:
        self.delete_queryset(request, Project.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        services.projects_delete(queryset)


# --- Items ------------------------------------------------------------------------------------


class LargeTablePaginator(Paginator):
    """The unfiltered item list counts from PostgreSQL's statistics instead of a full scan
    once the table is large; a filtered list (by project, state or a search) counts exactly."""

    estimate_above = 10_000

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if (
            connection.vendor == "postgresql"
            and isinstance(qs, QuerySet)
            and not qs.query.where
            and qs.model is Item
        ):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                    [Item._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > self.estimate_above:
                return int(row[0])
        return super().count


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = [
        "external_id",
        "project",
        "preview",
        "annotation_count",
        "needs_annotation",
        "priority",
    ]
    list_filter = ["project", "needs_annotation"]
    search_fields = ["external_id", "text"]
    list_select_related = ["project"]
    autocomplete_fields = ["project"]
    show_full_result_count = False
    paginator = LargeTablePaginator
    list_per_page = 50
    readonly_fields = [
        "image_preview",
        "image_format",
        "image_width",
        "image_height",
        "annotation_count",
        "needs_annotation",
        "required_answers",
        "created_at",
    ]
    actions = ["move_to_front", "send_to_review", "recount_projects"]

    def get_fields(self, request: HttpRequest, obj: Item | None = None) -> list[str]:
        # Images come in through the import, which verifies them; the admin never uploads one.
        fields = ["project", "external_id", "text", "metadata", "priority"]
        return fields + self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Item | None = None) -> list[str]:
        # An item stays in its project: its annotations and the counters belong there.
        return self.readonly_fields + (["project"] if obj is not None else [])

    @admin.display(description="content")
    def preview(self, obj: Item):
        if obj.image:
            return self._thumbnail(obj, 48)
        return Truncator(obj.text).chars(80)

    @admin.display(description="image")
    def image_preview(self, obj: Item):
        return self._thumbnail(obj, 320) if obj.image else "—"

    def _thumbnail(self, obj: Item, height: int):
        url = reverse("admin:annotations_item_image", args=[obj.pk])
        return format_html(
            '<img src="{}" alt="{}" loading="lazy" style="max-height:{}px;max-width:{}px">',
            url,
            obj.external_id,
            height,
            height * 2,
        )

    def get_urls(self):
        image = path(
            "<int:object_id>/image/",
            self.admin_site.admin_view(self.image_view),
            name="annotations_item_image",
        )
        return [image, *super().get_urls()]

    def image_view(self, request: HttpRequest, object_id: int) -> FileResponse:
        """The item's image for staff who may view items in the admin. The annotators' image
        route checks project membership, which a superuser usually does not have."""
        item = Item.objects.filter(pk=object_id).first()
        if item is None:
            raise Http404("No such item.")
        if not self.has_view_permission(request, item):
            raise PermissionDenied
        return serve_item_image(item)

    def save_model(self, request: HttpRequest, obj: Item, form, change: bool) -> None:
        if change:
            fields = [f for f in form.changed_data if f != "project"]
            if fields:
                obj.save(update_fields=fields)
            return
        with transaction.atomic():
            obj.save()
            services.add_items_counted(obj.project, 1)

    @admin.action(description="Move the selected items to the front of the queue")
    def move_to_front(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        moved = 0
        for project_id in _project_ids(queryset):
            top = (
                Item.objects.filter(project_id=project_id, needs_annotation=True)
                .order_by("-priority")
                .values_list("priority", flat=True)
                .first()
            )
            moved += queryset.filter(project_id=project_id).update(priority=(top or 0.0) + 1.0)
        self.message_user(request, f"Moved {moved} item(s) to the front.", messages.SUCCESS)

    @admin.action(description="Send the selected items to review")
    def send_to_review(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        if queryset.count() > _FLAG_UP_TO:
            self.message_user(
                request, f"Send at most {_FLAG_UP_TO} items to review at a time.", messages.ERROR
            )
            return
        flagged = 0
        for item in queryset.select_related("project"):
            review_flag(item=item, user=request.user, note="Flagged from the admin")
            flagged += 1
        self.message_user(request, f"Sent {flagged} item(s) to review.", messages.SUCCESS)

    @admin.action(description="Recount the queue state of the selected items' projects")
    def recount_projects(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        ids = _project_ids(queryset)
        services.projects_recount(ids)
        self.message_user(request, f"Recounted {len(ids)} project(s).", messages.SUCCESS)

    def get_deleted_objects(self, objs, request):
        if isinstance(objs, QuerySet) and objs.count() > _LIST_DELETED_UP_TO:
            counts = {
                Item: objs.count(),
                Annotation: Annotation.objects.filter(item__in=objs).count(),
                AnnotationRevision: AnnotationRevision.objects.filter(
                    annotation__item__in=objs
                ).count(),
                ItemLease: ItemLease.objects.filter(item__in=objs).count(),
            }
            return _summarised_delete(request, counts)
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Read-only on their own pages, these go with their items through `items_delete`.
        perms_needed -= {m._meta.verbose_name for m in (GoldLabel, Review, ReviewEvent)}
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Item) -> None:
        services.items_delete(Item.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        services.items_delete(queryset)


# --- Annotations ------------------------------------------------------------------------------


class AnnotationRevisionInline(admin.TabularInline):
    model = AnnotationRevision
    fields = ["created_at", "previous_labels", "previous_skipped", "labels", "skipped"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """Annotations are written by annotators through the services only (validated labels,
    exact counters, revisions); the admin views and deletes them."""

    list_display = ["item", "annotator", "label_list", "skipped", "time_spent", "updated_at"]
    list_filter = ["project", "skipped", "annotator"]
    search_fields = ["item__external_id", "annotator__username"]
    list_select_related = ["item", "annotator"]
    show_full_result_count = False
    readonly_fields = [
        "project",
        "item",
        "annotator",
        "label_list",
        "skipped",
        "time_spent",
        "client_uuid",
        "created_at",
        "updated_at",
    ]
    fields = readonly_fields
    inlines = [AnnotationRevisionInline]

    @admin.display(description="labels")
    def label_list(self, obj: Annotation) -> str:
        return ", ".join(obj.labels) if obj.labels else "—"

    @admin.display(description="time spent", ordering="time_spent_ms")
    def time_spent(self, obj: Annotation) -> str:
        return f"{obj.time_spent_ms / 1000:.1f} s"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Annotation) -> None:
        services.annotations_delete(Annotation.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Annotation]) -> None:
        services.annotations_delete(queryset)


@admin.register(AnnotationRevision)
class AnnotationRevisionAdmin(admin.ModelAdmin):
    """The audit trail of edits: read-only."""

    list_display = ["annotation", "previous_labels", "labels", "skipped", "created_at"]
    list_filter = ["annotation__project", "skipped"]
    search_fields = ["annotation__item__external_id", "annotation__annotator__username"]
    list_select_related = ["annotation__item", "annotation__annotator"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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


class LeaseStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(expires_at__gt=now)
        if self.value() == "expired":
            return queryset.filter(expires_at__lte=now)
        return queryset


@admin.register(ItemLease)
class ItemLeaseAdmin(admin.ModelAdmin):
    """Leases are the queue's business: visible here, and deletable to free an item early."""

    list_display = ["item", "user", "project", "created_at", "expires_at", "active"]
    list_filter = [LeaseStateFilter, "project"]
    search_fields = ["item__external_id", "user__username"]
    list_select_related = ["item", "user", "project"]
    show_full_result_count = False

    @admin.display(boolean=True, description="active")
    def active(self, obj: ItemLease) -> bool:
        return obj.expires_at > timezone.now()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- Assignments, gold labels and reviews -----------------------------------------------------


class _ReadOnly(admin.ModelAdmin):
    """Rows written by the services only: listed and opened here, never edited."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


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
class GoldLabelAdmin(_ReadOnly):
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
class ReviewAdmin(_ReadOnly):
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
class ReviewEventAdmin(_ReadOnly):
    list_display = ["review", "actor", "action", "labels", "chosen", "created_at"]
    list_filter = ["action", "review__project"]
    search_fields = ["review__item__external_id", "actor__username", "comment"]
    list_select_related = ["review__item", "actor"]
    show_full_result_count = False
