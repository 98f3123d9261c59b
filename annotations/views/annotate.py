"""The annotate page and the small HTMX endpoints behind it.

The page holds the current item and the next one(s), fetched ahead; a submission answers with
the next item to hold, so the annotator never waits for the server between two items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotations import access, queue
from annotations.forms import NextForm, SubmitForm
from annotations.models import Annotation, Item, ItemLease, LabelClass, Project
from annotations.services import SubmissionRefused, annotation_submit
from curation.services import is_stale
from curation.status import model_status
from curation.suggest import suggestions_for
from curation.training_requests import request_training

HISTORY_LENGTH = 10


def keyed_classes(project: Project) -> list[dict]:
    """The classes offered (retired ones are not), with the key that picks each: its own,
    else 1–9 by position."""
    out = []
    for index, label in enumerate(LabelClass.objects.filter(project=project, retired=False)):
        key = label.key or (str(index + 1) if index < 9 else "")
        out.append(
            {
                "name": label.name,
                "color": label.color,
                "key": key,
                "digit": str(index + 1) if index < 9 else "",
            }
        )
    return out


@dataclass(frozen=True)
class HistoryEntry:
    """One row of the history strip."""

    item_id: int
    external_id: str
    labels: list[str]
    skipped: bool
    url: str


def _history(project: Project, user) -> list[HistoryEntry]:
    """The user's last answers, with only what the history strip shows. Plain SQL: it is read
    on every submission, and building the ORM query cost more than running it."""
    answer, item = (connection.ops.quote_name(m._meta.db_table) for m in (Annotation, Item))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT a.item_id, i.external_id, a.labels, a.skipped FROM {answer} a "
            f"JOIN {item} i ON i.id = a.item_id WHERE a.project_id = %s AND a.annotator_id = %s "
            "ORDER BY a.updated_at DESC, a.id DESC LIMIT %s",
            [project.pk, user.pk, HISTORY_LENGTH],
        )
        rows = cursor.fetchall()
    # Reversed once, not per row (~0.1 ms each here); the item's id is the path's last part.
    base = reverse("annotate_item", args=[project.pk, 0]).removesuffix("0/")
    # PostgreSQL's driver decodes JSON itself; SQLite's hands over the text.
    return [
        HistoryEntry(
            item_id,
            external_id,
            json.loads(labels) if isinstance(labels, str) else labels,
            bool(skipped),
            f"{base}{item_id}/",
        )
        for item_id, external_id, labels, skipped in rows
    ]


def _card_context(project: Project, items: list[Item], *, reopened: dict | None = None) -> dict:
    """Cards to render, with the model's guess for each; `reopened` maps an item id to the
    labels already given to it (a reopened answer gets no suggestion)."""
    reopened = reopened or {}
    fresh = [i for i in items if i.pk not in reopened]
    # No cards to guess for (a submission from a full queue): no query for the model's state.
    suggested = suggestions_for(project, fresh)[1] if fresh else {}
    cards = [
        {"item": i, "labels": reopened.get(i.pk), "suggest": suggested.get(i.pk)} for i in items
    ]
    return {
        "project": project,
        "cards": cards,
        "can_flag": access.can(project, access.REVIEW),
    }


@require_GET
@login_required
def annotate(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
    items = queue.next_items(project=project, user=request.user, count=1 + settings.PREFETCH_ITEMS)
    status = queue.queue_status(project=project, user=request.user, with_waiting=not items)
    return render(
        request,
        "annotations/annotate.html",
        {
            **_card_context(project, items),
            "classes": keyed_classes(project),
            "history": _history(project, request.user),
            "status": status,
            "queue_target": 1 + settings.PREFETCH_ITEMS,
            "heartbeat_seconds": max(5, settings.LEASE_SECONDS // 3),
            "can_export": access.can(project, access.EXPORT),
            "model": model_status(project),
        },
    )


@require_GET
@login_required
def annotate_next(request: HttpRequest, pk: int) -> HttpResponse:
    """Cards for the next items (used to refill the queue, and by the empty-queue poll)."""
    project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
    form = NextForm(request.GET)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400, content_type="text/plain")
    items = queue.next_items(
        project=project,
        user=request.user,
        count=form.cleaned_data["count"] or 1,
        exclude=form.cleaned_data["exclude"],
    )
    # The cards show the queue status only when they are empty; counting the user's answers on
    # every refill would cost a scan that grows with their work.
    status = (
        None if items else queue.queue_status(project=project, user=request.user, with_waiting=True)
    )
    return render(
        request,
        "annotations/annotate.html#cards",
        {**_card_context(project, items), "status": status},
    )


@require_POST
@login_required
def annotate_submit(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
    form = SubmitForm(request.POST)
    if not form.is_valid():
        return _error(form.errors.get_json_data())
    data = form.cleaned_data
    # Not read here: the service reads it locked, and refuses an item of another project.
    item = Item(pk=data["item"], project=project)
    try:
        annotation_submit(
            item=item,
            annotator=request.user,
            labels=data["labels"],
            skipped=data["skipped"],
            time_spent_ms=data["time_spent_ms"] or 0,
            client_uuid=data["client_uuid"],
        )
    except Item.DoesNotExist:
        raise Http404("No such item in this project.") from None
    except SubmissionRefused as exc:
        # The page shows the message and moves on to its next card; resending cannot help.
        return _error(exc.message_dict, status=409)
    except ValidationError as exc:
        return _error(exc.message_dict)
    want = data["want"] or 0
    items = (
        queue.next_items(
            project=project, user=request.user, count=want, exclude=data["exclude"] | {item.pk}
        )
        if want
        else []
    )
    status = queue.queue_status(  # reads the counters this submission just changed
        project=project, user=request.user, with_waiting=bool(want) and not items
    )
    return render(
        request,
        "annotations/annotate.html#submitted",
        {
            **_card_context(project, items),
            "show_empty": bool(want) and not items,
            "history": _history(project, request.user),
            "status": status,
        },
    )


@require_GET
@login_required
def annotate_item(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """One item the annotator already answered (or holds), to look at or change again."""
    project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
    item = Item.objects.filter(project=project, pk=item_pk).first()
    if item is None:
        raise Http404("No such item.")
    # The lease first, then the answer: a submission turns one into the other in one commit,
    # which may land between these two reads. In this order one of them is always seen (the
    # other order read "no answer yet", then "no lease any more": 404 on going back at once).
    held = ItemLease.objects.filter(item=item, user=request.user).exists()
    mine = Annotation.objects.filter(item=item, annotator=request.user).first()
    if mine is None and not held:
        raise Http404("You have not been given this item.")
    reopened = {item.pk: mine.labels if mine else []}
    if not request.htmx:
        # A plain link (no JavaScript): the full page, opened at this item.
        return render(
            request,
            "annotations/annotate.html",
            {
                **_card_context(project, [item], reopened=reopened),
                "classes": keyed_classes(project),
                "history": _history(project, request.user),
                "status": queue.queue_status(project=project, user=request.user),
                "queue_target": 1 + settings.PREFETCH_ITEMS,
                "heartbeat_seconds": max(5, settings.LEASE_SECONDS // 3),
            },
        )
    return render(
        request,
        "annotations/annotate.html#cards",
        _card_context(project, [item], reopened=reopened),
    )


@require_POST
@login_required
def annotate_heartbeat(request: HttpRequest, pk: int) -> HttpResponse:
    """Keeps the leases of an open annotate page alive."""
    project = access.get_project_for_user(request.user, pk, allowed=access.ANNOTATE)
    renewed = queue.renew_leases(project=project, user=request.user)
    # Catch-up for labels whose training event was lost: while anyone labels, a lagging model
    # is noticed within one heartbeat.
    if is_stale(project):
        request_training(project.pk)
    return HttpResponse(status=204, headers={"X-Leases-Renewed": str(renewed)})


def _error(errors: dict, *, status: int = 422) -> HttpResponse:
    return HttpResponse(
        json.dumps({"errors": errors}), status=status, content_type="application/json"
    )
