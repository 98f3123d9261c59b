"""The New project page: name, item kind, labelling mode, label classes, instructions and
overlap, then on to the import page and the members page (`?setup=1` shows the steps).

For site admins and the users a site admin gave the "Can add project" permission
(`access.can_create_projects`); everyone else gets 403. The label classes are rows that the
buttons beside them add, remove and move; each button posts the whole form (htmx swaps in only
the rows, without it the page reloads), so the rows and what was typed in them live in the form
and the server renders them, with no script of our own.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django_htmx.middleware import HtmxDetails

from annotations import access
from annotations.label_classes import PALETTE
from annotations.models import Project
from annotations.project_setup import ClassSpec, class_errors, project_create

MAX_CLASSES = 100
FIRST_ROWS = 2


class HtmxRequest(HttpRequest):
    htmx: HtmxDetails


class NewProjectForm(forms.ModelForm):
    """The project's own fields; its classes are `ClassRowForm`s."""

    class Meta:
        model = Project
        fields = ["name", "item_kind", "labeling_mode", "description", "instructions", "overlap"]
        labels = {
            "item_kind": "Items are",
            "labeling_mode": "Labelling",
            "overlap": "Annotators per item",
        }
        help_texts = {
            "description": "Shown in the project list. Plain text.",
            "overlap": "How many people label each item; 2 or more gives agreement figures "
            "and a review queue for disagreements.",
        }
        error_messages = {"name": {"unique": "A project with this name already exists."}}
        widgets = {
            "name": forms.TextInput(attrs={"autofocus": True, "size": 40}),
            "item_kind": forms.RadioSelect,
            "labeling_mode": forms.RadioSelect,
            "description": forms.Textarea(attrs={"rows": 2, "cols": 70}),
            "instructions": forms.Textarea(attrs={"rows": 5, "cols": 70}),
            "overlap": forms.NumberInput(attrs={"min": 1, "max": 50}),
        }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["item_kind"].choices = Project.ItemKind.choices  # no "---------"
        self.fields["labeling_mode"].choices = Project.LabelingMode.choices


class ColorInput(forms.TextInput):
    input_type = "color"


class ClassRowForm(forms.Form):
    """One label class row (a row left without a name and a key is dropped)."""

    name = forms.CharField(max_length=100, required=False)
    color = forms.CharField(max_length=7, required=False, widget=ColorInput)
    key = forms.CharField(
        max_length=1, required=False, widget=forms.TextInput(attrs={"size": 2, "maxlength": 1})
    )


def _row(data: dict | None, index: int, *, initial: dict | None = None) -> ClassRowForm:
    return ClassRowForm(data, prefix=f"class-{index}", initial=initial)


def _posted_rows(request: HttpRequest) -> list[dict[str, str]]:
    """The class rows as typed, in the order shown."""
    try:
        count = int(request.POST.get("class-count", "0"))
    except ValueError:
        count = 0
    count = max(0, min(count, MAX_CLASSES))
    return [
        {f: request.POST.get(f"class-{i}-{f}", "") for f in ("name", "color", "key")}
        for i in range(count)
    ]


def _blank_row(index: int) -> dict[str, str]:
    return {"name": "", "color": PALETTE[index % len(PALETTE)], "key": ""}


def _apply_row_action(rows: list[dict[str, str]], action: str) -> tuple[list[dict], int, str]:
    """Add, remove or move a row; returns the rows, the row to focus and what to focus in it."""
    verb, _, at = action.partition("-")
    if verb == "add":
        if len(rows) < MAX_CLASSES:
            rows.append(_blank_row(len(rows)))
        return rows, len(rows) - 1, "name"
    try:
        i = int(at)
    except ValueError:
        return rows, -1, ""
    if not 0 <= i < len(rows):
        return rows, -1, ""
    if verb == "remove":
        rows.pop(i)
        if not rows:
            rows.append(_blank_row(0))
        return rows, min(i, len(rows) - 1), "name"
    to = i - 1 if verb == "up" else i + 1 if verb == "down" else i
    if 0 <= to < len(rows) and to != i:
        rows.insert(to, rows.pop(i))
    else:
        to = i
    # The same button again, unless the row reached the end where it is disabled.
    if len(rows) == 1:
        return rows, to, "name"
    if verb == "up" and to == 0:
        return rows, to, "down"
    if verb == "down" and to == len(rows) - 1:
        return rows, to, "up"
    return rows, to, verb


@require_http_methods(["GET", "POST"])
@login_required
def project_new(request: HtmxRequest) -> HttpResponse:
    if not access.can_create_projects(request.user):
        raise PermissionDenied("Ask a site admin for the permission to create projects.")
    focus_row, focus = -1, ""
    errors: list[str] = []
    status = 200
    if request.method == "GET":
        form = NewProjectForm()
        rows = [_row(None, i, initial=_blank_row(i)) for i in range(FIRST_ROWS)]
    elif row_action := request.POST.get("row"):
        raw, focus_row, focus = _apply_row_action(_posted_rows(request), row_action)
        rows = [_row(None, i, initial=r) for i, r in enumerate(raw)]
        if request.htmx:
            return _render_rows(request, rows, focus_row, focus)
        form = NewProjectForm(initial={k: v for k, v in request.POST.items() if k != "row"})
    else:
        form = NewProjectForm(request.POST)
        typed = [r for r in _posted_rows(request) if r["name"].strip() or r["key"].strip()]
        # Numbered without the blank rows, so "class 2" in a message is the second row shown.
        rows = [_row(_prefixed(r, i), i) for i, r in enumerate(typed)]
        form_ok = form.is_valid()
        if _rows_valid(rows) and form_ok:
            try:
                project = project_create(
                    **form.cleaned_data,
                    classes=[ClassSpec(**r.cleaned_data) for r in rows],
                    creator=request.user,
                )
            except ValidationError as exc:
                errors = _attach(form, exc)
            else:
                messages.success(
                    request,
                    f"Created {project.name} with {len(rows)} label "
                    f"class{'es' if len(rows) != 1 else ''}. Next, import its items.",
                )
                return redirect(reverse("project_import", args=[project.pk]) + "?setup=1")
        if not rows:
            rows = [_row(None, 0, initial=_blank_row(0))]
            errors.append("Add at least one label class.")
        focus_row, focus = _first_bad_row(form, rows)
        status = 400
    if focus_row >= 0:  # the focus goes to that row, not to the project's name
        form.fields["name"].widget.attrs.pop("autofocus", None)
    return render(
        request,
        "annotations/project_new.html",
        {
            "form": form,
            "rows": rows,
            "errors": errors,
            "focus_row": focus_row,
            "focus": focus,
            "max_classes": MAX_CLASSES,
            "refused": status == 400,
        },
        status=status,
    )


def _first_bad_row(form: NewProjectForm, rows: list[ClassRowForm]) -> tuple[int, str]:
    """Where the keyboard's focus goes on a refused form: the first class row with a problem
    (its field), unless the project's own fields have one (the name field has it already)."""
    if form.errors:
        return -1, ""
    for i, row in enumerate(rows):
        if row.is_bound and row.errors:
            return i, "key" if "key" in row.errors and "name" not in row.errors else "name"
    return -1, ""


def _prefixed(row: dict[str, str], index: int) -> dict[str, str]:
    return {f"class-{index}-{field}": value for field, value in row.items()}


def _rows_valid(rows: list[ClassRowForm]) -> bool:
    """Each row's fields, then the rows together (repeated names and keys, colours, keys)."""
    valid = [r.is_valid() for r in rows]  # every row, so each shows its own errors
    if not all(valid):
        return False
    problems = class_errors([ClassSpec(**r.cleaned_data) for r in rows])
    for row, errors in zip(rows, problems, strict=True):
        for field, messages_ in errors.items():
            row.add_error(field if field in row.fields else None, messages_)
    return bool(rows) and not any(problems)


def _attach(form: forms.Form, exc: ValidationError) -> list[str]:
    """A refusal of the service: on the field it names, else returned to show above the form."""
    if not hasattr(exc, "error_dict"):
        return exc.messages
    rest = []
    for field, errors in exc.error_dict.items():
        if field in form.fields:
            form.add_error(field, errors)
        else:
            rest += [m for e in errors for m in e.messages]
    return rest


def _render_rows(
    request: HttpRequest, rows: list[ClassRowForm], focus_row: int, focus: str
) -> HttpResponse:
    return render(
        request,
        "annotations/_class_rows.html",
        {"rows": rows, "focus_row": focus_row, "focus": focus, "max_classes": MAX_CLASSES},
    )
