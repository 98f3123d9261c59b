"""Helpers shared by the admin modules."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html_join

# Deleting more objects than this shows counts on the confirmation page instead of listing
# every object (which would never finish rendering for a large project).
LIST_DELETED_UP_TO = 100


def link_if_route(label: str, name: str, *args) -> tuple[str, str] | None:
    """(label, url) for a route, or None while that route does not exist (yet)."""
    try:
        return label, reverse(name, args=args)
    except NoReverseMatch:
        return None


def links_html(links: Iterable[tuple[str, str] | None]):
    present = [x for x in links if x is not None]
    if not present:
        return "—"
    return format_html_join(" · ", '<a href="{}">{}</a>', ((url, lbl) for lbl, url in present))


def summarised_delete(
    request: HttpRequest, counts: dict[type, int]
) -> tuple[list[str], dict[str, int], set[str], list[str]]:
    """What `ModelAdmin.get_deleted_objects` returns, as counts per model rather than a list
    of every object. Staff without the delete permission of a model involved are refused."""
    summary, model_count, perms_needed = [], {}, set()
    for model, n in counts.items():
        if not n:
            continue
        opts = model._meta
        name = opts.verbose_name if n == 1 else opts.verbose_name_plural
        summary.append(f"{n} {name}")
        model_count[opts.verbose_name_plural] = n
        if not request.user.has_perm(f"{opts.app_label}.delete_{opts.model_name}"):
            perms_needed.add(opts.verbose_name)
    return summary, model_count, perms_needed, []


def project_ids_of(queryset: QuerySet) -> set[int]:
    return set(queryset.order_by().values_list("project_id", flat=True).distinct())


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by the services only: listed and opened here, never edited."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
