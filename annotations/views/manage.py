"""The project admin's pages: settings, members and item assignments.

Each page is one route answering GET (the page) and POST (a form on it, told apart by its
`action`); a successful POST redirects back to the page (post-redirect-get) with a message,
a refused one renders the page again with the errors and status 400.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from annotations import access
from annotations.assignments import (
    MAX_ITEMS,
    assigned_items_sample,
    assignment_create,
    assignment_progress,
    assignment_remove,
    items_by_external_ids,
    items_random_open,
)
from annotations.members import membership_add, membership_remove, membership_set_role
from annotations.models import Membership, Project
from annotations.project_settings import (
    PROJECT_FIELDS,
    TRAINING_FIELDS,
    VERSION_FIELDS,
    project_settings_update,
)
from curation.models import ProjectTraining

Role = Membership.Role


def _add_errors(form: forms.Form, exc: ValidationError) -> None:
    """Attach a service's ValidationError to the form: to the field it names when the form has
    one, else above the form."""
    if not hasattr(exc, "error_dict"):
        form.add_error(None, exc)
        return
    for name, errors in exc.error_dict.items():
        form.add_error(name if name in form.fields else None, errors)


def _manage(request: HttpRequest, pk: int) -> Project:
    return access.get_project_for_user(request.user, pk, allowed=access.MANAGE)


# --- Settings ---------------------------------------------------------------------------------


def _share(low: float = 0.0, high: float = 1.0) -> forms.NumberInput:
    return forms.NumberInput(attrs={"min": low, "max": high, "step": 0.01})


class ProjectSettingsForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = list(PROJECT_FIELDS)
        labels = {
            "overlap": "Annotators per item",
            "serve_partial_first": "Finish started items first",
            "review_threshold": "Review when agreement is below",
            "review_model_confidence": "Review when the model disputes with confidence",
            "consensus": "Gold label",
            "quality_threshold": "List annotators whose accuracy is below",
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3, "cols": 70}),
            "instructions": forms.Textarea(attrs={"rows": 6, "cols": 70}),
            "overlap": forms.NumberInput(attrs={"min": 1}),
            "review_threshold": _share(),
            "review_model_confidence": _share(0.5),
            "quality_threshold": _share(),
        }


class TrainingSettingsForm(forms.ModelForm):
    FIELDS = (*TRAINING_FIELDS, *VERSION_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Added later than the others: a form (or script) that does not send it keeps it.
        self.fields["suggestion_source"].required = False

    def clean_suggestion_source(self) -> str:
        return self.cleaned_data["suggestion_source"] or self.instance.suggestion_source

    class Meta:
        model = ProjectTraining
        fields = [*TRAINING_FIELDS, *VERSION_FIELDS]
        labels = {
            "strategy": "Query strategy",
            "exploration": "Exploration share",
            "eval_share": "Evaluation share",
            "suggestions": "Model suggestions",
            "suggestion_source": "Suggestion source",
            "snapshot_every": "Save a version every N gold labels",
            "split_validation": "Validation share",
            "split_test": "Test share",
            "split_stratified": "Stratify the splits by class",
        }
        widgets = {
            "exploration": _share(),
            "eval_share": _share(0.0, 0.5),
            "snapshot_every": forms.NumberInput(attrs={"min": 1}),
            "split_validation": _share(0.0, 0.5),
            "split_test": _share(0.0, 0.5),
        }


@require_http_methods(["GET", "POST"])
@login_required
def project_settings(request: HttpRequest, pk: int) -> HttpResponse:
    project = _manage(request, pk)
    training = ProjectTraining.objects.filter(project=project).first() or ProjectTraining(
        project=project
    )
    # The forms validate copies, so a refused value never shows up in the page's header.
    instance = Project.objects.get(pk=project.pk)
    status = 200
    if request.method == "POST":
        form = ProjectSettingsForm(request.POST, instance=instance)
        training_form = TrainingSettingsForm(request.POST, instance=training, prefix="training")
        if form.is_valid() and training_form.is_valid():
            try:
                changed = project_settings_update(
                    project=project,
                    values={f: form.cleaned_data[f] for f in PROJECT_FIELDS},
                    training={
                        f: training_form.cleaned_data[f] for f in TrainingSettingsForm.FIELDS
                    },
                )
            except ValidationError as exc:
                _add_errors(form, exc)
            else:
                messages.success(request, _saved_message(project, changed))
                return redirect("project_settings", pk=project.pk)
        status = 400
    else:
        form = ProjectSettingsForm(instance=instance)
        training_form = TrainingSettingsForm(instance=training, prefix="training")
    return render(
        request,
        "annotations/project_settings.html",
        {"project": project, "form": form, "training_form": training_form, "tab": "settings"},
        status=status,
    )


def _saved_message(project: Project, changed: list[str]) -> str:
    if not changed:
        return "Nothing changed."
    message = "Settings saved."
    if "overlap" in changed:
        message += (
            f" Each item now needs {project.overlap} answer{'s' if project.overlap != 1 else ''}:"
            f" {project.complete_count:,} of {project.item_count:,} items are complete."
        )
    return message


# --- Members ----------------------------------------------------------------------------------


class MemberAddForm(forms.Form):
    user = forms.CharField(max_length=254, label="Username or email")
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)


class MemberChangeForm(forms.Form):
    membership = forms.IntegerField(min_value=1, max_value=2**63 - 1)
    role = forms.ChoiceField(choices=Role.choices, required=False)


def _members_page(project: Project, setup: bool) -> HttpResponse:
    """Back to the members page, still showing the set-up steps when it was opened with them."""
    url = reverse("project_members", args=[project.pk])
    return redirect(url + "?setup=1" if setup else url)


@require_http_methods(["GET", "POST"])
@login_required
def project_members(request: HttpRequest, pk: int) -> HttpResponse:
    project = _manage(request, pk)
    # The last step of setting up a new project (`views.new_project`).
    setup = request.GET.get("setup") == "1"
    add_form = MemberAddForm(prefix="add")
    errors: list[str] = []
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "add":
            add_form = MemberAddForm(request.POST, prefix="add")
            if add_form.is_valid():
                try:
                    member = membership_add(
                        project=project,
                        username_or_email=add_form.cleaned_data["user"],
                        role=add_form.cleaned_data["role"],
                    )
                except ValidationError as exc:
                    _add_errors(add_form, exc)
                else:
                    messages.success(
                        request,
                        f"Added {member.user.get_username()} as "
                        f"{member.get_role_display().lower()}.",
                    )
                    return _members_page(project, setup)
        elif action in ("role", "remove"):
            change = MemberChangeForm(request.POST)
            if change.is_valid():
                membership = get_object_or_404(
                    Membership.objects.select_related("user"),
                    project=project,
                    pk=change.cleaned_data["membership"],
                )
                try:
                    return _change_member(request, project, membership, action, change, setup)
                except ValidationError as exc:
                    errors = exc.messages
            else:
                errors = ["Choose a member and a role."]
        else:
            errors = ["Unknown action."]
    memberships = (
        Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    )
    return render(
        request,
        "annotations/project_members.html",
        {
            "project": project,
            "memberships": memberships,
            "add_form": add_form,
            "roles": Role.choices,
            "errors": errors,
            "tab": "members",
            "setup": setup,
        },
        status=400 if request.method == "POST" else 200,
    )


def _change_member(
    request: HttpRequest,
    project: Project,
    membership: Membership,
    action: str,
    form: MemberChangeForm,
    setup: bool,
) -> HttpResponse:
    name = membership.user.get_username()
    yourself = membership.user_id == request.user.pk
    if action == "remove":
        membership_remove(membership=membership)
        messages.success(request, f"Removed {name} from the project.")
        # Removing yourself leaves nothing here you may open.
        return redirect("project_list") if yourself else _members_page(project, setup)
    role = form.cleaned_data["role"]
    if not role:
        raise ValidationError("Choose a role.")
    membership = membership_set_role(membership=membership, role=role)
    messages.success(request, f"{name} is now {membership.get_role_display().lower()}.")
    if yourself and role != Role.ADMIN:
        return redirect("project_detail", pk=project.pk)
    return _members_page(project, setup)


# --- Assignments ------------------------------------------------------------------------------


class AssignForm(forms.Form):
    source = forms.ChoiceField(
        choices=[("ids", "These items"), ("random", "Random open items")],
        initial="ids",
        widget=forms.RadioSelect,
        label="Items",
    )
    external_ids = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 50, "spellcheck": "false"}),
        label="Item ids",
        help_text=f"One item id per line, as in the imported file; at most {MAX_ITEMS:,}.",
    )
    count = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ITEMS,
        label="How many",
        help_text="Drawn at random from the open items no one is assigned yet.",
    )
    all_annotators = forms.BooleanField(
        required=False,
        label="Every member with the annotator role",
        help_text="A calibration set: each of them labels every one of these items.",
    )
    users = forms.TypedMultipleChoiceField(
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="And these members",
    )

    def __init__(self, *args, members: list[Membership], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["users"].choices = [
            (m.user_id, f"{m.user.get_username()} ({m.get_role_display().lower()})")
            for m in members
        ]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("source") == "ids" and not (data.get("external_ids") or "").strip():
            self.add_error("external_ids", "List the ids of the items to assign, one per line.")
        if data.get("source") == "random" and not data.get("count"):
            self.add_error("count", "How many items?")
        if not data.get("users") and not data.get("all_annotators"):
            self.add_error("users", "Choose at least one annotator.")
        return data


class UnassignForm(forms.Form):
    user = forms.IntegerField(min_value=1, max_value=2**63 - 1)


@require_http_methods(["GET", "POST"])
@login_required
def project_assignments(request: HttpRequest, pk: int) -> HttpResponse:
    project = _manage(request, pk)
    members = list(
        Membership.objects.filter(project=project, role__in=access.ANNOTATE)
        .select_related("user")
        .order_by("user__username")
    )
    form = AssignForm(members=members, prefix="assign")
    errors: list[str] = []
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "assign":
            form = AssignForm(request.POST, members=members, prefix="assign")
            if form.is_valid():
                try:
                    return _assign(request, project, members, form)
                except ValidationError as exc:
                    _add_errors(form, exc)
        elif action == "unassign":
            unassign = UnassignForm(request.POST)
            if unassign.is_valid():
                return _unassign(request, project, unassign.cleaned_data["user"])
            errors = ["Choose whose assignments to remove."]
        else:
            errors = ["Unknown action."]
    samples = assigned_items_sample(project=project)
    return render(
        request,
        "annotations/project_assignments.html",
        {
            "project": project,
            "form": form,
            "errors": errors,
            "rows": [(p, samples.get(p.user_id, [])) for p in assignment_progress(project=project)],
            "annotator_count": sum(1 for m in members if m.role == Role.ANNOTATOR),
            "tab": "assignments",
        },
        status=400 if request.method == "POST" else 200,
    )


def _assign(
    request: HttpRequest, project: Project, members: list[Membership], form: AssignForm
) -> HttpResponse:
    data = form.cleaned_data
    chosen = set(data["users"])
    users = [
        m.user
        for m in members
        if m.user_id in chosen or (data["all_annotators"] and m.role == Role.ANNOTATOR)
    ]
    if not users:
        raise ValidationError({"users": "This project has no member with the annotator role."})
    if data["source"] == "random":
        items = items_random_open(project=project, count=data["count"])
    else:
        items = items_by_external_ids(project=project, text=data["external_ids"])
    result = assignment_create(project=project, items=items, users=users, assigned_by=request.user)
    names = ", ".join(u.get_username() for u in users)
    messages.success(
        request,
        f"Assigned {result.items:,} item{'s' if result.items != 1 else ''} to {names} "
        f"({result.created:,} new assignment{'s' if result.created != 1 else ''}).",
    )
    return redirect("project_assignments", pk=project.pk)


def _unassign(request: HttpRequest, project: Project, user_id: int) -> HttpResponse:
    user = get_user_model().objects.filter(pk=user_id).first()
    removed = assignment_remove(project=project, users=[user]) if user is not None else 0
    if removed:
        messages.success(
            request,
            f"Removed {removed:,} assignment{'s' if removed != 1 else ''} of "
            f"{user.get_username()}; items no one else is assigned go back to the shared queue.",
        )
    else:
        messages.info(request, "There was nothing to remove.")
    return redirect("project_assignments", pk=project.pk)
