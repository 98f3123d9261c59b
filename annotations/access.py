"""The few functions every view, API endpoint, consumer and media route uses to decide who
sees what. A user sees a project only through a membership (404 otherwise); the role then
decides what they may do in it (403 otherwise).

Site admins (superusers) already see and change everything in the Django admin, so every page
of every project is open to them too, as its project admin: a project they created in the admin
(or one whose last project admin left) stays manageable from the app. Whether that access
comes from a membership or from being a site admin is `project.site_admin_access`."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, QuerySet
from django.http import Http404

from annotations.models import Item, ItemAssignment, Membership, Project

Role = Membership.Role

# Each action and the roles allowed to take it. Reviewers annotate too; project admins do all.
ANNOTATE = frozenset({Role.ANNOTATOR, Role.REVIEWER, Role.ADMIN})
VIEW = ANNOTATE
EXPORT = frozenset({Role.REVIEWER, Role.ADMIN})
REVIEW = frozenset({Role.REVIEWER, Role.ADMIN})
MANAGE = frozenset({Role.ADMIN})


def is_site_admin(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_superuser)


def projects_for_user(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if is_site_admin(user):
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)


def role_in(project: Project, user: AbstractBaseUser | AnonymousUser) -> str | None:
    if not user.is_authenticated:
        return None
    if is_site_admin(user):
        return Role.ADMIN
    return (
        Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
    )


def get_project_for_user(user, pk: int, *, allowed: frozenset[str] = VIEW) -> Project:
    """The project `pk` if `user` is a member (else 404) whose role is in `allowed` (else 403).
    The role is attached as `project.user_role`, and whether the user has items assigned in it
    as `project.has_assignments`."""
    if not user.is_authenticated:
        raise Http404("No such project.")
    # Whether the user has items assigned in the project rides along (an index probe), so the
    # queue skips looking for assigned items in the common case of none, at no extra query.
    assigned = ItemAssignment.objects.filter(project_id=pk, user=user)
    row = (
        Membership.objects.filter(project_id=pk, user=user)
        .select_related("project")
        .only("role", "project")
        .annotate(has_assignments=Exists(assigned))
        .first()
    )
    if is_site_admin(user):
        return _for_site_admin(pk, row, assigned)
    if row is None:
        raise Http404("No such project.")
    if row.role not in allowed:
        raise PermissionDenied("Your role in this project does not allow this.")
    project = row.project
    project.user_role = row.role
    project.has_assignments = row.has_assignments
    project.site_admin_access = False
    return project


def _for_site_admin(pk: int, row: Membership | None, assigned: QuerySet) -> Project:
    """A site admin acts as project admin in every project, member or not."""
    if row is not None:
        project, has_assignments = row.project, row.has_assignments
    else:
        project = Project.objects.filter(pk=pk).annotate(has_assignments=Exists(assigned)).first()
        if project is None:
            raise Http404("No such project.")
        has_assignments = project.has_assignments
    project.user_role = Role.ADMIN
    project.has_assignments = has_assignments
    project.site_admin_access = row is None or row.role != Role.ADMIN
    return project


def get_item_for_user(user, project_pk: int, item_pk: int, *, allowed=VIEW) -> Item:
    project = get_project_for_user(user, project_pk, allowed=allowed)
    item = Item.objects.filter(project=project, pk=item_pk).first()
    if item is None:
        raise Http404("No such item.")
    item.project = project
    return item


def can(project: Project, action: frozenset[str]) -> bool:
    return getattr(project, "user_role", None) in action
