"""Django admin for the model in the loop: trained versions (read-only) and training settings.

Versions are written by the trainer only, so their admin is read-only. The list is the pruned
history (`curation.versions`): the newest versions label by label, plus the first version at 1,
2, 5, 10, 20, 50, … labels, so the learning curve stays readable. The per-project training row
lets a site admin pick the query strategy and exploration share (saved through
`project_settings_update`, like the project's Settings page), train on demand, and shows whether
the worker's follow-up jobs (accuracy estimate, weighted consensus) are due.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from annotations.project_settings import TRAINING_FIELDS, project_settings_update
from curation.models import ModelVersion, ProjectTraining


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "labels_used", "estimated_accuracy", "evaluated"]
    list_display += ["balance", "trained_at", "duration_ms"]
    list_filter = ["project"]
    list_select_related = ["project"]
    ordering = ["project", "-version"]

    def get_readonly_fields(self, request: HttpRequest, obj: ModelVersion | None = None):
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="Class balance")
    def balance(self, obj: ModelVersion) -> str:
        return ", ".join(f"{name}: {n}" for name, n in (obj.class_balance or {}).items())

    @admin.display(description="Accuracy on random items")
    def evaluated(self, obj: ModelVersion) -> str:
        ev = (obj.metrics or {}).get("eval") or {}
        return f"{ev['accuracy']:.1%} (n={ev['total']})" if ev.get("total") else "—"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelVersion | None = None) -> bool:
        # Viewing is allowed through has_view_permission; nothing here may be edited.
        return False


@admin.register(ProjectTraining)
class ProjectTrainingAdmin(admin.ModelAdmin):
    list_display = ["project", "strategy", "exploration", "eval_share", "suggestions"]
    list_display += ["current_version", "labels_seen", "evaluation", "trained_at"]
    list_editable = ["strategy", "exploration", "eval_share", "suggestions"]
    list_select_related = ["project", "current_version"]
    fields = ["project", "strategy", "exploration", "eval_share", "suggestions"]
    fields += ["current_version", "labels_seen", "evaluation", "trained_at", "follow_up"]
    readonly_fields = ["current_version", "labels_seen", "evaluation", "trained_at", "follow_up"]
    actions = ["train_now"]

    def get_readonly_fields(self, request: HttpRequest, obj: ProjectTraining | None = None):
        # The project is chosen once, when the row is added; afterwards it identifies the row.
        return [*self.readonly_fields, "project"] if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ProjectTraining, form, change: bool) -> None:
        """Through the Settings page's service, which validates and owns any side effects."""
        project_settings_update(
            project=obj.project,
            values={},
            training={f: form.cleaned_data[f] for f in TRAINING_FIELDS if f in form.cleaned_data},
        )
        saved = ProjectTraining.objects.get(project=obj.project)
        obj.pk = saved.pk

    @admin.display(description="Accuracy on random items")
    def evaluation(self, obj: ProjectTraining) -> str:
        """Test-then-train accuracy on the evaluation slice, with its 95% Wilson interval."""
        # Here, not at the top: every web process loads the admin, and the modules behind these
        # helpers load the numerical libraries.
        from curation.evaluation import eval_summary

        summary = eval_summary(obj.project)
        if not summary["total"]:
            return "not measured yet"
        return (
            f"{summary['accuracy']:.1%} ({summary['low']:.1%}–{summary['high']:.1%}, "
            f"n={summary['total']})"
        )

    @admin.display(description="Follow-up jobs")
    def follow_up(self, obj: ProjectTraining) -> str:
        """Due jobs wait for a training worker's next run or sweep (`curation.jobs`)."""
        from curation.jobs import jobs_status

        return ", ".join(f"{name}: {state}" for name, state in jobs_status(obj.project).items())

    @admin.action(description="Train now")
    def train_now(self, request: HttpRequest, queryset: QuerySet[ProjectTraining]) -> None:
        from curation.services import train_project_once

        for training in queryset.select_related("project"):
            version = train_project_once(training.project)
            if version is None:
                self.message_user(
                    request,
                    f"{training.project}: no new labels since the last model; nothing to train.",
                    messages.INFO,
                )
            else:
                self.message_user(
                    request,
                    f"{training.project}: trained model version {version.version} on "
                    f"{version.labels_used} labels.",
                    messages.SUCCESS,
                )
