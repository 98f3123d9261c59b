"""The project's record of bulk actions on items (`ItemAction`, written by `annotations.bulk`),
as the action log page and its API twin list it: newest first, a page at a time by id."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from annotations.models import ItemAction, Project, Review

PAGE_SIZE = 50
_REASONS = dict(Review.Reason.choices)


def item_actions_for(project: Project, *, before: int | None = None) -> QuerySet[ItemAction]:
    """The project's recorded actions, newest (highest id) first; `before`: only those older
    than that action id (the next page's keyset)."""
    rows = ItemAction.objects.filter(project=project).select_related("user").order_by("-id")
    if before is not None:
        rows = rows.filter(pk__lt=before)
    return rows


def item_action_summary(action: ItemAction) -> dict[str, Any]:
    """One action as the log shows it: who, when, what, on how many items, why, on which
    selection, and a link to the data browser with that selection's filter when it was one."""
    params = action.params or {}
    picked = params.get("items")
    browser = reverse("project_data", args=[action.project_id])
    return {
        "id": action.pk,
        "action": action.action,
        "action_label": action.get_action_display(),
        "user": action.user.get_username() if action.user_id else None,
        "created_at": action.created_at,
        "finished_at": action.finished_at,
        "item_count": action.item_count,
        "done_count": action.done_count,
        "reason": params.get("reason", ""),
        "reason_label": _REASONS.get(params.get("reason", ""), ""),
        "note": params.get("note", ""),
        "users": params.get("users", []),
        "format": params.get("format", ""),
        "filter": action.filter,
        "picked": len(picked) if isinstance(picked, list) else None,
        # Picked ids are not a filter the browser takes; "all matching" is (as it is now).
        "browser_url": f"{browser}?{action.filter}" if picked is None else None,
    }
