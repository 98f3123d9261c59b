"""Memberships in the admin, through the same services as the Members page
(`annotations.members`): a project keeps at least one project admin, with the same message,
and a member who leaves (or whose row is given to someone else) loses their assignments and
leases.

Admin forms validate before anything is saved, so each form's changes are first applied inside
a savepoint that is rolled back ("dry run"): a change the services refuse shows their message
on the form instead of an error page, and nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.forms import BaseInlineFormSet
from django.http import HttpRequest

from annotations.members import membership_add, membership_remove, membership_set_role, user_find
from annotations.models import Membership

Role = Membership.Role


@dataclass(frozen=True)
class MemberChange:
    """One change to a project's members: add a user, change a role, give a row to another
    user (`replace`), or remove a member."""

    kind: str  # "add" | "role" | "replace" | "remove"
    project_id: int
    membership_id: int | None = None
    user: object = None
    role: str = ""

    @property
    def rank(self) -> int:
        """Apply order: whoever becomes project admin first, removals last, so a hand-over of
        the project admin role in one save is not refused as "the last admin leaves"."""
        if self.kind == "add" or (self.kind == "role" and self.role == Role.ADMIN):
            return 0
        return {"replace": 1, "role": 2, "remove": 3}[self.kind]


def changes_apply(changes: Iterable[MemberChange]) -> None:
    """Apply the changes through the membership services, in a safe order."""
    for change in sorted(changes, key=lambda c: c.rank):
        row = Membership(pk=change.membership_id, project_id=change.project_id)
        if change.kind == "add":
            membership_add(
                project=row.project, username_or_email=change.user.get_username(), role=change.role
            )
        elif change.kind == "role":
            membership_set_role(membership=row, role=change.role)
        elif change.kind == "replace":
            membership_add(
                project=row.project, username_or_email=change.user.get_username(), role=change.role
            )
            membership_remove(membership=row)
        else:
            membership_remove(membership=row)


class _DryRun(Exception):
    pass


def changes_check(changes: list[MemberChange]) -> None:
    """Raise the services' ValidationError if they would refuse `changes`; writes nothing."""
    if not changes:
        return
    try:
        with transaction.atomic():
            changes_apply(changes)
            raise _DryRun
    except _DryRun:
        pass
    except ValidationError as exc:
        raise ValidationError(exc.messages) from None


def formset_changes(formset: BaseInlineFormSet, project_id: int) -> list[MemberChange]:
    """The changes a validated membership inline formset asks for."""
    out = []
    for form in formset.forms:
        data = getattr(form, "cleaned_data", None)
        if not data:
            continue
        pk = form.instance.pk
        if formset.can_delete and formset._should_delete_form(form):
            if pk is not None:
                out.append(MemberChange("remove", project_id, pk))
            continue
        if pk is None:
            if form.has_changed():
                out.append(MemberChange("add", project_id, None, data["user"], data["role"]))
        elif "user" in form.changed_data:
            out.append(MemberChange("replace", project_id, pk, data["user"], data["role"]))
        elif "role" in form.changed_data:
            out.append(MemberChange("role", project_id, pk, None, data["role"]))
    return out


class MembershipFormSet(BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        if self.instance.pk is None:  # a new project: the people added must be able to log in
            for change in formset_changes(self, 0):
                user_find(change.user.get_username())
            return
        changes_check(formset_changes(self, self.instance.pk))

    def save_through_services(self) -> None:
        changes_apply(formset_changes(self, self.instance.pk))


class MembershipInline(admin.TabularInline):
    model = Membership
    formset = MembershipFormSet
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]
    extra = 0


class MembershipAdminForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ["project", "user", "role"]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        changes_check([self.change()])
        return data

    def change(self) -> MemberChange:
        data = self.cleaned_data
        if self.instance.pk is None:
            return MemberChange("add", data["project"].pk, None, data["user"], data["role"])
        return MemberChange("role", self.instance.project_id, self.instance.pk, None, data["role"])


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    """Roles change on the member's page (one at a time, so the "one project admin" rule is
    checked on what is saved); a membership is not moved to another project or user here:
    remove it and add another."""

    form = MembershipAdminForm
    list_display = ["user", "project", "role", "created_at"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "user__email", "project__name"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None):
        return ["project", "user", "created_at"] if obj is not None else ["created_at"]

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        if change and "role" not in form.changed_data:
            return
        changes_apply([form.change()])
        if not change:
            saved = Membership.objects.get(project=obj.project, user=obj.user)
            obj.pk, obj.created_at = saved.pk, saved.created_at

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        removals = [MemberChange("remove", m.project_id, m.pk) for m in objs]
        try:
            changes_check(removals)
        except ValidationError as exc:
            protected = [*protected, *exc.messages]
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        changes_apply([MemberChange("remove", obj.project_id, obj.pk)])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        with transaction.atomic():
            changes_apply(MemberChange("remove", m.project_id, m.pk) for m in queryset)
