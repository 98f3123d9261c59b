"""The data analyses on the pages: the latest run of each (with live progress over the
websocket, `static/js/analyses.js`), "Run now", sending the likely label errors to review, and
"the label is right" on an item. The data browser includes `_analysis_runs.html` with
`analyses_context(project)`; the same services as the API and the commands."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotations import access
from annotations.models import Item, Project
from curation.analysis_runs import ANALYSES, latest_runs, run_request
from curation.dataset_models import AnalysisRun, LabelIssue
from curation.label_issues import MAX_TO_REVIEW, label_errors_to_review, label_issue_dismiss

PARTIAL = "annotations/_analysis_runs.html"


def analyses_context(project: Project) -> dict:
    """What `_analysis_runs.html` shows: each analysis with its latest run (None: never run)
    and how many label errors are flagged and not yet sent to review."""
    latest = latest_runs(project)
    return {
        "project": project,
        "analyses": [
            {"kind": kind, "label": AnalysisRun.Kind(kind).label, "run": latest.get(kind)}
            for kind in ANALYSES
        ],
        "flagged_count": LabelIssue.objects.filter(
            project=project, status=LabelIssue.Status.FLAGGED
        ).count(),
        "can_manage": access.can(project, access.MANAGE),
        "max_to_review": MAX_TO_REVIEW,
        "multi_label": project.is_multi_label,
    }


def _respond(request: HttpRequest, project: Project, *, notice: str = "", error: str = ""):
    if request.htmx:
        context = analyses_context(project) | {"notice": notice, "error": error}
        return render(request, PARTIAL, context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    elif notice:
        messages.success(request, notice)
    return redirect("project_analyses", project.pk)


@require_GET
@login_required
def project_analyses(request: HttpRequest, pk: int) -> HttpResponse:
    """The analyses panel on its own (the data browser includes the same partial)."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    template = PARTIAL if request.htmx else "annotations/project_analyses.html"
    return render(request, template, analyses_context(project))


@require_POST
@login_required
def project_analysis_run(request: HttpRequest, pk: int, kind: str) -> HttpResponse:
    """Queue a run of `kind` now (reviewers and project admins); a worker runs it."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    if kind not in ANALYSES:
        raise Http404("No such analysis.")
    run = run_request(project=project, kind=kind, user=request.user)
    return _respond(request, project, notice=f"{run.get_kind_display()}: {run.message.lower()}.")


@require_POST
@login_required
def project_label_errors_review(request: HttpRequest, pk: int) -> HttpResponse:
    """Send the N most likely label errors to review (project admins)."""
    project = access.get_project_for_user(request.user, pk, allowed=access.MANAGE)
    try:
        limit = int(request.POST.get("limit", ""))
        sent = label_errors_to_review(project=project, user=request.user, limit=limit)
    except ValueError:
        return _respond(
            request, project, error=f"How many to send: a number from 1 to {MAX_TO_REVIEW}."
        )
    return _respond(request, project, notice=f"{len(sent)} likely label errors sent to review.")


@require_POST
@login_required
def item_label_issue_dismiss(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """ "The label is right" for an item's flag (reviewers and project admins)."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    item = Item.objects.filter(project=project, pk=item_pk).first()
    if item is None:
        raise Http404("No such item.")
    try:
        label_issue_dismiss(item=item, user=request.user)
    except ValueError as exc:
        text, ok = str(exc), False
    else:
        text, ok = f"{item.external_id}: the label is right; it will not be flagged again.", True
    if request.htmx:
        return HttpResponse(text, content_type="text/plain", status=200 if ok else 400)
    (messages.success if ok else messages.error)(request, text)
    return redirect("project_data_item", project.pk, item.pk)
