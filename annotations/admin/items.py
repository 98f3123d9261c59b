"""Items, their answers and edits, and leases."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import QuerySet
from django.http import FileResponse, Http404, HttpRequest
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from annotations import bulk, services
from annotations.admin.common import (
    LIST_DELETED_UP_TO,
    ReadOnlyAdmin,
    project_ids_of,
    summarised_delete,
)
from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    ItemLease,
    Project,
    Review,
    ReviewEvent,
)
from annotations.views.media import serve_item_image

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
    actions = ["move_to_front", "send_to_review", "send_to_relabel", "recount_projects"]

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
        moved = services.items_move_to_front(queryset)
        self.message_user(
            request,
            f"Moved {moved} item(s) to the front; they stay there, ahead of the model's "
            "ranking, until answered.",
            messages.SUCCESS,
        )

    @admin.action(description="Send the selected items to review")
    def send_to_review(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        done = self._bulk(
            request, queryset, bulk.items_send_to_review, note="Flagged from the admin"
        )
        self.message_user(request, f"Sent {done} item(s) to review.", messages.SUCCESS)

    @admin.action(description="Send the selected items back for relabelling")
    def send_to_relabel(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        done = self._bulk(request, queryset, bulk.items_relabel)
        self.message_user(
            request,
            f"Sent {done} item(s) back for relabelling (items nobody answered yet are left as "
            "they are).",
            messages.SUCCESS,
        )

    def _bulk(self, request: HttpRequest, queryset: QuerySet[Item], service, **params) -> int:
        """Run a bulk action service (`annotations.bulk`) on the selected items, a project at a
        time, recorded as the admin user's action like any other."""
        by_project: dict[int, list[int]] = {}
        for project_id, pk in queryset.order_by().values_list("project_id", "pk"):
            by_project.setdefault(project_id, []).append(pk)
        done = 0
        for project in Project.objects.filter(pk__in=list(by_project)).order_by("pk"):
            result = service(
                project=project,
                user=request.user,
                selection=bulk.Selection(ids=tuple(sorted(by_project[project.pk]))),
                **params,
            )
            done += result.done
        return done

    @admin.action(description="Recount the queue state of the selected items' projects")
    def recount_projects(self, request: HttpRequest, queryset: QuerySet[Item]) -> None:
        ids = project_ids_of(queryset)
        services.projects_recount(ids)
        self.message_user(request, f"Recounted {len(ids)} project(s).", messages.SUCCESS)

    def get_deleted_objects(self, objs, request):
        if isinstance(objs, QuerySet) and objs.count() > LIST_DELETED_UP_TO:
            counts = {
                Item: objs.count(),
                Annotation: Annotation.objects.filter(item__in=objs).count(),
                AnnotationRevision: AnnotationRevision.objects.filter(
                    annotation__item__in=objs
                ).count(),
                ItemLease: ItemLease.objects.filter(item__in=objs).count(),
            }
            return summarised_delete(request, counts)
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
class AnnotationRevisionAdmin(ReadOnlyAdmin):
    """The audit trail of edits: read-only."""

    list_display = ["annotation", "previous_labels", "labels", "skipped", "created_at"]
    list_filter = ["annotation__project", "skipped"]
    search_fields = ["annotation__item__external_id", "annotation__annotator__username"]
    list_select_related = ["annotation__item", "annotation__annotator"]
    show_full_result_count = False


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
