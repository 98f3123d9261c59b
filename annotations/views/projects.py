"""The project list and a project's overview page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotations import access
from annotations.models import Membership, Review


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
        {"memberships": memberships, "site_admin_projects": others},
    )


@require_GET
@login_required
def project_detail(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk)
    can_review = access.can(project, access.REVIEW)
    return render(
        request,
        "annotations/project_detail.html",
        {
            "project": project,
            "label_classes": project.label_classes.all(),
            "can_export": access.can(project, access.EXPORT),
            "can_manage": access.can(project, access.MANAGE),
            "can_review": can_review,
            "open_reviews": (
                Review.objects.filter(project=project, status=Review.Status.OPEN).count()
                if can_review
                else 0
            ),
        },
    )
