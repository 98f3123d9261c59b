"""The data browser's bulk actions: the bar's form posts here, is confirmed ("N items will be
…", in place with HTMX, or as a page without JavaScript), then runs through `annotations.bulk`.
Reviewers and project admins; assigning and deleting are for project admins (`bulk.ROLES`).
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from annotations import access, bulk, exports
from annotations.action_log import PAGE_SIZE, item_action_summary, item_actions_for
from annotations.models import ItemAction, Project, Review
from annotations.views.data import stream_export

Kind = ItemAction.Kind
# What the confirmation says each action will do to the items.
WILL = {
    Kind.REVIEW: "sent to review",
    Kind.RELABEL: "sent back for relabelling (their answers are kept)",
    Kind.ASSIGN: "assigned",
    Kind.DELETE: "deleted, with their answers (a record of them is kept)",
    Kind.EXPORT: "exported",
}
DONE = {
    Kind.REVIEW: "Sent {n:,} item(s) to review.",
    Kind.RELABEL: "Sent {n:,} item(s) back for relabelling.",
    Kind.ASSIGN: "Assigned {n:,} item(s).",
    Kind.DELETE: "Deleted {n:,} item(s).",
}


class BulkForm(forms.Form):
    """The bar's fields: the rows picked (`item`) or everything matching the browser's filter
    (`all_matching` with `filter`, its querystring), the action and its parameters."""

    action = forms.ChoiceField(choices=Kind.choices)
    item = forms.TypedMultipleChoiceField(coerce=int, required=False, choices=())
    all_matching = forms.BooleanField(required=False)
    filter = forms.CharField(required=False, max_length=4000)
    reason = forms.ChoiceField(
        required=False,
        choices=[(r.value, r.label) for r in bulk.REVIEW_REASONS],
        initial=Review.Reason.FLAG,
    )
    note = forms.CharField(required=False, max_length=2000)
    users = forms.CharField(required=False, max_length=4000)
    format = forms.ChoiceField(required=False, choices=[(f, f) for f in exports.FORMATS])
    confirmed = forms.BooleanField(required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["item"].valid_value = lambda value: True  # any id; the service checks

    def selection(self) -> bulk.Selection:
        data = self.cleaned_data
        if data["all_matching"]:
            return bulk.Selection.matching(data["filter"])
        return bulk.Selection.of_ids(data["item"])


def _problems(errors: dict) -> str:
    return "; ".join(f"{field}: {' '.join(map(str, msgs))}" for field, msgs in errors.items())


def _back(project: Project, querystring: str) -> str:
    url = reverse("project_data", args=[project.pk])
    return f"{url}?{querystring}" if querystring else url


@require_POST
@login_required
def items_bulk(request: HttpRequest, pk: int) -> HttpResponse:
    """First post: the confirmation, with the count of items the action would take now.
    Confirmed: run it, then back to the browser with the result."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    form = BulkForm(request.POST)
    if not form.is_valid():
        return _refuse(request, project, _problems(form.errors))
    data = form.cleaned_data
    action = data["action"]
    if not access.can(project, bulk.ROLES[action]):
        raise PermissionDenied("Your role in this project does not allow this action.")
    try:
        selection = form.selection()
        users = (
            bulk.annotators_named(project, data["users"].split(","))
            if action == Kind.ASSIGN
            else []
        )
        if action == Kind.EXPORT:
            if data["confirmed"]:
                result, chunks = bulk.items_export(
                    project=project,
                    user=request.user,
                    selection=selection,
                    fmt=data["format"] or "jsonl",
                )
                fmt = result.action.params["format"]
                return stream_export(
                    request, project, fmt, chunks, filename=selection_filename(project, fmt)
                )
            count = selection.count(project)
        elif data["confirmed"]:
            result = bulk.item_action_run(
                project=project,
                user=request.user,
                action=action,
                selection=selection,
                reason=data["reason"] or Review.Reason.FLAG,
                note=data["note"],
                users=users,
            )
        else:
            count = selection.count(project)
    except ValidationError as exc:
        return _refuse(request, project, _problems(exc.message_dict))
    if not data["confirmed"]:
        context = {
            "project": project,
            "form_data": request.POST,
            "action": action,
            "action_label": Kind(action).label,
            "will": WILL[action],
            "count": count,
            "users": users,
            "back": _back(project, data["filter"]),
        }
        template = (
            "annotations/_bulk_confirm.html" if request.htmx else "annotations/bulk_confirm.html"
        )
        return render(request, template, context)
    text = DONE[action].format(n=result.done)
    if result.skipped:
        text += f" {result.skipped:,} left alone (nothing to do for them)."
    text += "".join(f" {note}" for note in result.notes)
    messages.success(request, text)
    back = _back(project, data["filter"])
    return HttpResponseClientRedirect(back) if request.htmx else redirect(back)


def _refuse(request: HttpRequest, project: Project, problem: str) -> HttpResponse:
    if request.htmx:
        return render(
            request,
            "annotations/_bulk_confirm.html",
            {"project": project, "error": problem},
            status=400,
        )
    messages.error(request, problem)
    return redirect(_back(project, request.POST.get("filter", "")))


@require_http_methods(["GET"])
@login_required
def items_export_selection(request: HttpRequest, pk: int, fmt: str) -> StreamingHttpResponse:
    """Export the items matching the browser's filter (the querystring, as on the page), or
    the ids given as `item`, in the project export's formats."""
    project = access.get_project_for_user(request.user, pk, allowed=access.EXPORT)
    params = request.GET.copy()
    picked = params.pop("item", [])
    try:
        selection = (
            bulk.Selection.of_ids(picked) if picked else bulk.Selection.matching(params.urlencode())
        )
        result, chunks = bulk.items_export(
            project=project, user=request.user, selection=selection, fmt=fmt
        )
    except ValidationError as exc:
        return HttpResponse(_problems(exc.message_dict), status=400, content_type="text/plain")
    return stream_export(request, project, fmt, chunks, filename=selection_filename(project, fmt))


def selection_filename(project: Project, fmt: str) -> str:
    return exports.export_filename(project, fmt).replace("-labels.", "-selection.")


@require_GET
@login_required
def project_item_actions(request: HttpRequest, pk: int) -> HttpResponse:
    """The project's recorded data actions, newest first, `?before=<id>` for older ones."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    before = request.GET.get("before", "")
    if before and not before.isdigit():
        return HttpResponseBadRequest("before: an action id (a whole number).")
    rows = list(item_actions_for(project, before=int(before) if before else None)[: PAGE_SIZE + 1])
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_url = (
        f"{reverse('project_item_actions', args=[project.pk])}?before={rows[-1].pk}" if more else ""
    )
    return render(
        request,
        "annotations/item_actions.html",
        {
            "project": project,
            "actions": [item_action_summary(a) for a in rows],
            "next_url": next_url,
        },
    )
