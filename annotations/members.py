"""Who is in a project and with which role: project admins add people by username or email,
change their role and remove them.

A project always keeps at least one project admin, so someone can still manage it from the
app; the admins' rows are locked while checking, so two admins demoting each other at once
cannot both succeed. Roles are read on every request (`annotations.access`), so a change takes
effect at once. Removing a member also removes their item assignments and leases: items
assigned to someone who can no longer open the project would wait for them forever.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotations.assignments import assignment_remove
from annotations.events import publish_access_changed_on_commit
from annotations.models import ItemLease, Membership, Project

Role = Membership.Role

_LAST_ADMIN = "A project needs at least one project admin: make someone else project admin first."


def user_find(identifier: str) -> AbstractBaseUser:
    """The active user with this username, else the one with this email (any case)."""
    User = get_user_model()
    identifier = (identifier or "").strip()
    if not identifier:
        raise ValidationError({"user": "Enter a username or an email address."})
    user = User.objects.filter(**{User.USERNAME_FIELD: identifier}).first()
    if user is None and "@" in identifier:
        by_email = list(
            User.objects.filter(**{f"{User.get_email_field_name()}__iexact": identifier})[:2]
        )
        if len(by_email) > 1:
            raise ValidationError(
                {"user": "Several users have this email address; enter the username instead."}
            )
        user = by_email[0] if by_email else None
    if user is None:
        raise ValidationError({"user": f"No user with the username or email {identifier!r}."})
    if not user.is_active:
        raise ValidationError({"user": f"The account {user.get_username()!r} is deactivated."})
    return user


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"Unknown role {role!r}."})


def _locked_admins(project_id: int) -> list[int]:
    """Lock and return the ids of the project's admin memberships (in id order)."""
    return list(
        Membership.objects.select_for_update()
        .filter(project_id=project_id, role=Role.ADMIN)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _locked(membership: Membership) -> Membership:
    current = Membership.objects.select_for_update().filter(pk=membership.pk).first()
    if current is None:
        raise ValidationError("This person is no longer a member of the project.")
    return current


def membership_add(*, project: Project, username_or_email: str, role: str) -> Membership:
    """Add an existing user to the project with `role`."""
    _check_role(role)
    user = user_find(username_or_email)
    existing = Membership.objects.filter(project=project, user=user).first()
    if existing is not None:
        raise ValidationError(
            {
                "user": f"{user.get_username()} is already a member of this project "
                f"({existing.get_role_display().lower()})."
            }
        )
    try:
        with transaction.atomic():
            return Membership.objects.create(project=project, user=user, role=role)
    except IntegrityError:  # added by someone else a moment ago
        raise ValidationError(
            {"user": f"{user.get_username()} is already a member of this project."}
        ) from None


def membership_set_role(*, membership: Membership, role: str) -> Membership:
    """Change a member's role; the last project admin cannot step down."""
    _check_role(role)
    with transaction.atomic():
        admins = _locked_admins(membership.project_id)
        current = _locked(membership)
        if current.role == Role.ADMIN and role != Role.ADMIN and admins == [current.pk]:
            raise ValidationError({"role": _LAST_ADMIN})
        if current.role != role:
            current.role = role
            current.save(update_fields=["role"])
    return current


def membership_remove(*, membership: Membership) -> None:
    """Remove a member, with their item assignments and leases; never the last project admin.
    Their answers stay: they are part of the data."""
    with transaction.atomic():
        admins = _locked_admins(membership.project_id)
        current = _locked(membership)
        if current.role == Role.ADMIN and admins == [current.pk]:
            raise ValidationError(_LAST_ADMIN)
        project = current.project
        assignment_remove(project=project, users=[current.user])
        ItemLease.objects.filter(project=project, user=current.user).delete()
        current.delete()
        publish_access_changed_on_commit(user_id=current.user_id, project_id=project.pk)
