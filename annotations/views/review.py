"""The reviewer page: one disputed item at a time, every annotator's answer side by side with
the model's prediction, decided with the keyboard.

Each action answers with the next item to review, already claimed for the reviewer (HTMX swaps
`#review-main`; without JavaScript the forms post and redirect back). The decision form carries a
fresh client UUID, so a decision sent twice is stored once.
"""

from __future__ import annotations

import uuid
from collections import Counter

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from annotations import access
from annotations.forms import DecideForm, FlagForm, ReviewActionForm, parse_ids
from annotations.models import Item, Project, Review, ReviewEvent
from annotations.review import (
    ReviewConflict,
    review_candidates,
    review_decide,
    review_flag,
    review_next,
    review_release,
    review_renew,
    review_reopen,
)
from annotations.views.annotate import keyed_classes
from curation.dataset_models import LabelIssue
from curation.duplicate_review import item_duplicates
from curation.suggest import predictions_for

RECENT = 10


def _review_context(project: Project, review: Review | None) -> dict:
    """What the reviewer sees of one review: the item, the answers, the votes per class and the
    model's prediction with every class's probability."""
    if review is None:
        return {"current": None}
    item = review.item
    prediction = predictions_for(project, [item]).get(item.pk)
    candidates = review_candidates(review, model=prediction)
    answers = [c for c in candidates if c.source != "model"]
    votes = Counter(name for c in answers for name in c.labels)
    names = project.class_names()
    # A likely label error's reason, suggestion and out-of-sample probabilities (the row the
    # label-error analysis wrote; shown while it is open or after the review closed it).
    issue = LabelIssue.objects.filter(item_id=item.pk).exclude(status="").first()
    return {
        "label_issue": issue,
        "label_issue_proba": sorted(
            (issue.probabilities if issue else {}).items(), key=lambda kv: -kv[1]
        ),
        "current": review,
        "item": item,
        "candidates": candidates,
        "votes": [
            {"name": n, "votes": votes[n], "share": votes[n] / len(answers) if answers else 0}
            for n in names
        ],
        "answers": len(answers),
        "prediction": prediction,
        "proba": sorted((prediction or {}).get("proba", {}).items(), key=lambda kv: -kv[1]),
        "events": list(review.events.select_related("actor")[:20]),
        "client_uuid": uuid.uuid4(),
        **_duplicates_context(item),
    }


def _duplicates_context(item: Item) -> dict:
    """The item's duplicate group (from the last duplicates analysis) and its other members
    with their gold labels, each linked to its own review when it has one."""
    group, others = item_duplicates(item)
    if group is None:
        return {"duplicate_group": None, "duplicate_others": []}
    reviews = dict(
        Review.objects.filter(item_id__in=[m.item_id for m in others]).values_list("item_id", "pk")
    )
    return {
        "duplicate_group": group,
        "duplicate_others": [
            {
                "item_id": m.item_id,
                "external_id": m.external_id,
                "gold": m.gold or [],
                "similarity": m.similarity,
                "review_pk": reviews.get(m.item_id),
            }
            for m in others
        ],
    }


def _side_context(project: Project, user) -> dict:
    open_reviews = Review.objects.filter(project=project, status=Review.Status.OPEN)
    decided = ReviewEvent.objects.filter(review__project=project, action=ReviewEvent.Action.DECIDE)
    return {
        "counts": {
            "open": open_reviews.count(),
            "decided": Review.objects.filter(project=project, status=Review.Status.DECIDED).count(),
            "mine": decided.filter(actor=user).count(),
        },
        "recent": list(
            Review.objects.filter(project=project, status=Review.Status.DECIDED)
            .select_related("item", "decided_by")
            .order_by("-decided_at", "-id")[:RECENT]
        ),
    }


def _render_main(
    request: HttpRequest,
    project: Project,
    exclude: frozenset[int],
    *,
    error: str = "",
    notice: str = "",
    status: int = 200,
) -> HttpResponse:
    """The next review for this reviewer (claimed), as the page or, for HTMX, its main part with
    the side panels out of band."""
    current = review_next(project=project, reviewer=request.user, exclude=exclude)
    context = {
        "project": project,
        "classes": keyed_classes(project),
        "exclude": ",".join(map(str, sorted(exclude))),
        "error": error,
        "notice": notice,
        "heartbeat_seconds": max(5, settings.LEASE_SECONDS // 3),
        **_review_context(project, current),
        **_side_context(project, request.user),
    }
    template = "annotations/review.html#swap" if request.htmx else "annotations/review.html"
    return render(request, template, context, status=status)


def _exclude_from(request: HttpRequest) -> frozenset[int]:
    try:
        return parse_ids(request.GET.get("exclude", "") or request.POST.get("exclude", ""))
    except ValidationError:
        return frozenset()


@require_GET
@login_required
def review_page(request: HttpRequest, pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    return _render_main(request, project, _exclude_from(request))


def _review_of(project: Project, review_pk: int) -> Review:
    review = (
        Review.objects.filter(project=project, pk=review_pk)
        .select_related("item", "decided_by", "flagged_by", "claimed_by")
        .first()
    )
    if review is None:
        raise Http404("No such review.")
    return review


def _after_action(
    request: HttpRequest, project: Project, exclude: frozenset[int], *, error="", notice=""
) -> HttpResponse:
    if request.htmx:
        return _render_main(request, project, exclude, error=error, notice=notice)
    if error:
        messages.error(request, error)
    elif notice:
        messages.success(request, notice)
    url = reverse("review", args=[project.pk])
    return redirect(f"{url}?exclude={','.join(map(str, sorted(exclude)))}" if exclude else url)


@require_POST
@login_required
def review_decide_view(request: HttpRequest, pk: int, review_pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    review = _review_of(project, review_pk)
    names = project.class_names()
    form = DecideForm(request.POST, label_names=names)
    if not form.is_valid():
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return _after_action(request, project, _exclude_from(request), error=problems)
    data = form.cleaned_data
    try:
        decided = review_decide(
            project=project,
            review_id=review.pk,
            reviewer=request.user,
            labels=data["labels"],
            comment=data["comment"],
            client_uuid=data["client_uuid"],
            model=predictions_for(project, [review.item]).get(review.item_id),
            label_names=names,
        )
    except ReviewConflict as exc:
        return _after_action(
            request, project, data["exclude"], error=f"{review.item.external_id}: {exc}"
        )
    except Review.DoesNotExist:
        # Removed meanwhile: the answers were changed until they agree.
        error = f"{review.item.external_id} no longer needs review: its answers now agree."
        return _after_action(request, project, data["exclude"], error=error)
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return _after_action(request, project, data["exclude"], error=problems)
    notice = f"{review.item.external_id} → {', '.join(decided.labels) or 'no label'}"
    return _after_action(request, project, data["exclude"], notice=notice)


@require_POST
@login_required
def review_skip_view(request: HttpRequest, pk: int, review_pk: int) -> HttpResponse:
    """Leave this item to another reviewer (for now) and move on."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    review = _review_of(project, review_pk)
    form = ReviewActionForm(request.POST)
    exclude = form.cleaned_data["exclude"] if form.is_valid() else frozenset()
    review_release(review=review, reviewer=request.user)
    return _after_action(request, project, exclude | {review.pk})


@require_POST
@login_required
def review_reopen_view(request: HttpRequest, pk: int, review_pk: int) -> HttpResponse:
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    review = _review_of(project, review_pk)
    form = ReviewActionForm(request.POST)
    if not form.is_valid():
        return _after_action(request, project, frozenset(), error="Invalid request.")
    try:
        review_reopen(
            project=project,
            review_id=review.pk,
            user=request.user,
            comment=form.cleaned_data["comment"],
        )
    except (ReviewConflict, Review.DoesNotExist) as exc:
        error = f"{review.item.external_id}: {exc}"
        return _after_action(request, project, form.cleaned_data["exclude"], error=error)
    return _after_action(
        request,
        project,
        form.cleaned_data["exclude"],
        notice=f"{review.item.external_id} reopened: it is back in the review queue.",
    )


@require_GET
@login_required
def review_detail(request: HttpRequest, pk: int, review_pk: int) -> HttpResponse:
    """One review with its full log: why it came to review, each decision and reopening."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    review = _review_of(project, review_pk)
    context = _review_context(project, review)
    context.update(
        {
            "project": project,
            "review": review,
            "events": list(review.events.select_related("actor")),
            "held_by_other": review.claimed_by_id not in (None, request.user.pk)
            and review.status == Review.Status.OPEN,
        }
    )
    return render(request, "annotations/review_detail.html", context)


@require_POST
@login_required
def review_heartbeat(request: HttpRequest, pk: int) -> HttpResponse:
    """Keeps the reviewer's claim alive while their page is open."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    renewed = review_renew(project=project, reviewer=request.user)
    return HttpResponse(status=204, headers={"X-Claims-Renewed": str(renewed)})


@require_POST
@login_required
def item_flag(request: HttpRequest, pk: int, item_pk: int) -> HttpResponse:
    """Send an item to review by hand (reviewers and project admins)."""
    project = access.get_project_for_user(request.user, pk, allowed=access.REVIEW)
    item = Item.objects.filter(project=project, pk=item_pk).first()
    if item is None:
        raise Http404("No such item.")
    item.project = project
    form = FlagForm(request.POST)
    note = form.cleaned_data["note"] if form.is_valid() else ""
    review_flag(item=item, user=request.user, note=note)
    text = f"{item.external_id} flagged for review."
    if request.htmx:
        return HttpResponse(text, content_type="text/plain")
    messages.success(request, text)
    return redirect("review", project.pk)
