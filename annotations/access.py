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
from django.db import connection
from django.db.models import QuerySet
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


# Who may create projects in the app and the API: site admins, and the users or groups a site
# admin gives Django's "Can add project" permission in Django admin (Users or Groups).
CREATE_PROJECTS = "annotations.add_project"


def can_create_projects(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.has_perm(CREATE_PROJECTS)
    )


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
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise Http404("No such project.") from None
    project = _project_with_role(pk, user)
    if is_site_admin(user):
        # A site admin acts as project admin in every project, member or not.
        if project is None:
            raise Http404("No such project.")
        project.site_admin_access = project.member_role != Role.ADMIN
        project.user_role = Role.ADMIN
        return project
    if project is None or project.member_role is None:
        raise Http404("No such project.")
    if project.member_role not in allowed:
        raise PermissionDenied("Your role in this project does not allow this.")
    project.user_role = project.member_role
    project.site_admin_access = False
    return project


def _project_with_role(pk: int, user) -> Project | None:
    """The project `pk` with the user's role in it (`member_role`, None for a non-member) and
    whether they have items assigned in it (`has_assignments`, an index probe: the queue then
    skips looking for assigned items in the common case of none), or None if there is no such
    project. One plain statement: every page and endpoint of a project runs it, and building it
    with the ORM (`Exists`, `select_related`) cost a tenth of a submission's CPU."""
    project, membership, assignment = (
        connection.ops.quote_name(m._meta.db_table) for m in (Project, Membership, ItemAssignment)
    )
    rows = Project.objects.raw(
        f"SELECT p.*, m.role AS member_role, EXISTS (SELECT 1 FROM {assignment} a "
        "WHERE a.project_id = p.id AND a.user_id = %s) AS has_assignments "
        f"FROM {project} p LEFT JOIN {membership} m ON m.project_id = p.id AND m.user_id = %s "
        "WHERE p.id = %s",
        [user.pk, user.pk, pk],
    )
    return next(iter(rows), None)


def get_item_for_user(user, project_pk: int, item_pk: int, *, allowed=VIEW) -> Item:
    project = get_project_for_user(user, project_pk, allowed=allowed)
    item = Item.objects.filter(project=project, pk=item_pk).first()
    if item is None:
        raise Http404("No such item.")
    item.project = project
    return item


def can(project: Project, action: frozenset[str]) -> bool:
    return getattr(project, "user_role", None) in action
