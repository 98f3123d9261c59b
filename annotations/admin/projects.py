"""Projects, their label classes, members and model settings."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from annotations import services
from annotations.admin.common import (
    ReadOnlyAdmin,
    link_if_route,
    links_html,
    summarised_delete,
)
from annotations.admin.members import MembershipInline, formset_changes
from annotations.label_classes import project_schema_check
from annotations.models import (
    Annotation,
    AnnotationRevision,
    Item,
    ItemLease,
    LabelClass,
    Membership,
    Project,
)
from annotations.project_settings import (
    PROJECT_FIELDS,
    TRAINING_FIELDS,
    project_settings_update,
    project_update,
)
from annotations.project_setup import ClassSpec, project_create
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
    """Classes are given when a project is created here; afterwards they change on the
    project's Label classes page, whose service keeps the stored answers in step with a rename
    and refuses to delete a class in use (linked from "links" below)."""

    model = LabelClass
    formset = LabelClassFormSet
    fields = ["order", "name", "color", "key", "retired"]
    ordering = ["order", "id"]
    extra = 0

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None):
        return ["retired"] if obj is None else self.fields

    def has_change_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_add_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return obj is None and super().has_add_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False


class ProjectTrainingInline(admin.StackedInline):
    model = ProjectTraining
    verbose_name = verbose_name_plural = "model in the loop"
    fields = ["strategy", "exploration", "eval_share", "suggestions", "suggestion_source"]
    can_delete = False
    max_num = 1


class ProjectAdminForm(forms.ModelForm):
    make_me_admin = forms.BooleanField(
        required=False,
        initial=True,
        label="Make me its project admin",
        help_text="Adds you as a member with the project admin role, so the project's pages "
        "list it for you. Leave unticked to only manage it as a site admin.",
    )

    class Meta:
        model = Project
        fields = ["name", "item_kind", "labeling_mode", *PROJECT_FIELDS]

    def clean(self) -> dict:
        data = super().clean()
        if self.instance.pk is not None and "item_kind" in data and "labeling_mode" in data:
            try:
                project_schema_check(
                    self.instance, item_kind=data["item_kind"], labeling_mode=data["labeling_mode"]
                )
            except ValidationError as exc:
                self.add_error(None, exc.messages)
        return data


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    """Edits go through the services the project's pages use: settings through
    `project_settings_update` (an overlap change recounts, a new review rule rebuilds the gold
    labels), the schema through `annotations.label_classes`, members through
    `annotations.members`. The item kind and labelling mode are read-only once items exist."""

    form = ProjectAdminForm
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

    def get_fieldsets(self, request: HttpRequest, obj: Project | None = None):
        if obj is not None:
            return self.fieldsets
        first = (None, {"fields": ["name", "description", "instructions", "make_me_admin"]})
        return [first, *self.fieldsets[1:3]]

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None):
        frozen = obj is not None and Item.objects.filter(project=obj).exists()
        return self.readonly_fields + (["item_kind", "labeling_mode"] if frozen else [])

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
                link_if_route("Label classes", "project_label_classes", obj.pk),
                link_if_route("Members", "project_members", obj.pk),
                link_if_route("Assignments", "project_assignments", obj.pk),
            ]
        )

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        if not change:
            return  # created with its classes and first admin in `save_related`
        # The form's copy is never saved whole: annotators may have moved the counters since
        # the page was loaded, and settings have side effects only their service knows.
        data = form.cleaned_data
        values = {f: data[f] for f in PROJECT_FIELDS if f in data}
        if "name" in form.changed_data:
            values["name"] = data["name"]
        if {"item_kind", "labeling_mode"} & set(form.changed_data):
            values.update(item_kind=data["item_kind"], labeling_mode=data["labeling_mode"])
        project_update(project=obj, values=values)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        project = form.instance
        # What the admin's change message reads; set by formset.save(), which the services
        # replace here.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if formset.model is Membership:
            formset.save_through_services()
        elif formset.model is LabelClass:
            return  # given to `project_create`; read-only once the project exists
        elif formset.model is ProjectTraining:
            for f in formset.forms:
                if f.cleaned_data and (f.has_changed() or f.instance.pk):
                    project_settings_update(
                        project=project,
                        values={},
                        training={name: f.cleaned_data[name] for name in TRAINING_FIELDS},
                    )
        else:
            super().save_formset(request, form, formset, change)

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        with transaction.atomic():
            if not change:
                self._create(request, form, formsets)
            super().save_related(request, form, formsets, change)

    def _create(self, request: HttpRequest, form, formsets) -> None:
        """The project, its classes and (ticked by default) the site admin as its project admin,
        through the service the app's New project page uses. The inline members are added
        afterwards; one who lists themselves there keeps the role they chose."""
        data = form.cleaned_data
        classes = []
        for formset in formsets:
            if formset.model is LabelClass:
                rows = [
                    f.cleaned_data
                    for f in formset.forms
                    if f.has_changed() and f.cleaned_data and not formset._should_delete_form(f)
                ]
                classes = [
                    ClassSpec(name=r["name"], color=r.get("color") or "", key=r.get("key") or "")
                    for r in sorted(rows, key=lambda r: r.get("order") or 0)
                ]
        listed = {
            change.user.pk
            for formset in formsets
            if formset.model is Membership
            for change in formset_changes(formset, 0)
        }
        creator = request.user if data.get("make_me_admin") else None
        project = project_create(
            name=data["name"],
            item_kind=data["item_kind"],
            labeling_mode=data["labeling_mode"],
            classes=classes,
            creator=creator if creator is not None and creator.pk not in listed else None,
            **{f: data[f] for f in PROJECT_FIELDS if f in data},
        )
        obj = form.instance  # the object the inlines and the admin's response refer to
        obj.pk = project.pk
        obj.refresh_from_db()
        obj._state.adding = False

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


@admin.register(LabelClass)
class LabelClassAdmin(ReadOnlyAdmin):
    """Listed here; changed on each project's Label classes page (`annotations.label_classes`
    rewrites the stored answers on a rename and refuses to delete a class in use)."""

    list_display = ["name", "project", "swatch", "key", "order", "retired", "manage"]
    list_filter = ["project", "retired"]
    search_fields = ["name", "project__name"]
    list_select_related = ["project"]
    autocomplete_fields = ["project"]
    ordering = ["project__name", "order", "id"]

    @admin.display(description="manage")
    def manage(self, obj: LabelClass):
        page = link_if_route("Label classes page", "project_label_classes", obj.project_id)
        return links_html([page])

    @admin.display(description="colour")
    def swatch(self, obj: LabelClass):
        return format_html(
            '<span style="display:inline-block;width:1em;height:1em;background:{}"></span> {}',
            obj.color,
            obj.color,
        )
