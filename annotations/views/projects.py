"""The project list and a project's page (the dashboard for reviewers and project admins)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotations import access
from annotations.models import Membership
from annotations.views.dashboard import dashboard_page
from curation.dashboard import annotator_progress


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    memberships = list(
        Membership.objects.filter(user=request.user)
        .select_related("project")
        .order_by("project__name")
    )
    others = []
    if access.is_site_admin(request.user):  # every project is open to a site admin
        mine = [m.project_id for m in memberships]
        others = list(access.projects_for_user(request.user).exclude(pk__in=mine))
    return render(
        request,
        "annotations/project_list.html",
        {
            "memberships": memberships,
            "site_admin_projects": others,
            "can_create": access.can_create_projects(request.user),
        },
    )


@require_GET
@login_required
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Reviewers and project admins get the dashboard; annotators their own progress and the
    start button."""
    project = access.get_project_for_user(request.user, pk)
    context = {
        "project": project,
        "label_classes": project.label_classes.all(),
        "can_export": access.can(project, access.EXPORT),
        "can_manage": access.can(project, access.MANAGE),
        "can_review": access.can(project, access.REVIEW),
    }
    if context["can_review"]:
        return dashboard_page(request, project, context)
    context["mine"] = annotator_progress(project, request.user)
    return render(request, "annotations/project_detail.html", context)
