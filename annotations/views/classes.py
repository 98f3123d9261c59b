"""The project admin's label classes page: add, rename, recolour, re-key, reorder, retire,
restore and delete classes, each through `annotations.label_classes`.

One route answering GET (the page) and POST (one form per action, told apart by `action`); a
successful POST redirects back with a message, a refused one renders the page with the error
and status 400, having changed nothing.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotations import access
from annotations.label_classes import (
    label_class_add,
    label_class_delete,
    label_class_move,
    label_class_set_retired,
    label_class_update,
)
from annotations.models import LabelClass, Project


class ClassForm(forms.Form):
    name = forms.CharField(max_length=100)
    color = forms.RegexField(
        regex=r"^#[0-9a-fA-F]{6}$",
        required=False,
        error_messages={"invalid": "Use a colour like #4f7cff."},
    )
    key = forms.CharField(max_length=1, required=False)


class ClassActionForm(forms.Form):
    label_class = forms.IntegerField(min_value=1, max_value=2**63 - 1)


ACTIONS = ("update", "up", "down", "retire", "restore", "delete")


@require_http_methods(["GET", "POST"])
@login_required
def project_label_classes(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    add_form = ClassForm(prefix="add")
    errors: list[str] = []
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "add":
                add_form = ClassForm(request.POST, prefix="add")
                if add_form.is_valid():
                    return _add(request, project, add_form)
                errors = ["The new class was not added: correct the fields marked below."]
            elif action in ACTIONS:
                return _change(request, project, action)
            else:
                errors = ["Unknown action."]
        except ValidationError as exc:
            errors = exc.messages
    return render(
        request,
        "annotations/project_label_classes.html",
        {
            "project": project,
            "classes": LabelClass.objects.filter(project=project).order_by("order", "id"),
            "has_items": project.item_count > 0,
            "add_form": add_form,
            "errors": errors,
            "tab": "classes",
        },
        status=400 if request.method == "POST" else 200,
    )


def _add(request: HttpRequest, project: Project, form: ClassForm) -> HttpResponse:
    data = form.cleaned_data
    added = label_class_add(
        project=project, name=data["name"], color=data["color"], key=data["key"]
    )
    messages.success(request, f"Added the class {added.name}.")
    return redirect("project_label_classes", pk=project.pk)


def _change(request: HttpRequest, project: Project, action: str) -> HttpResponse:
    which = ClassActionForm(request.POST)
    if not which.is_valid():
        raise ValidationError("Choose a label class.")
    label_class = LabelClass.objects.filter(
        project=project, pk=which.cleaned_data["label_class"]
    ).first()
    if label_class is None:
        raise ValidationError("This label class no longer exists.")
    name = label_class.name
    if action == "update":
        form = ClassForm(request.POST)
        if not form.is_valid():
            raise ValidationError(
                [f"{field}: {error}" for field, errs in form.errors.items() for error in errs]
            )
        data = form.cleaned_data
        changed = label_class_update(
            label_class=label_class,
            name=data["name"],
            color=data["color"] or label_class.color,
            key=data["key"],
        )
        if "name" in changed:
            message = (
                f"Renamed {name} to {label_class.name} in every answer, gold label and review; "
                "the model retrains with the new name."
            )
        else:
            message = f"Saved {label_class.name}." if changed else "Nothing changed."
    elif action in ("up", "down"):
        label_class_move(label_class=label_class, offset=-1 if action == "up" else 1)
        message = f"Moved {name} {action}."
    elif action in ("retire", "restore"):
        label_class_set_retired(label_class=label_class, retired=action == "retire")
        message = (
            f"Retired {name}: kept in the data and exports, no longer offered for new answers."
            if action == "retire"
            else f"Restored {name}: annotators and reviewers can choose it again."
        )
    else:
        label_class_delete(label_class=label_class)
        message = f"Deleted the class {name}."
    messages.success(request, message)
    return redirect("project_label_classes", pk=project.pk)
