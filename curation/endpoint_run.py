"""Asking a project's prediction endpoint for the items it has not predicted: the training
worker's job (`training.endpoint`, `curation.jobs`), never a web request.

A run takes the items without a current endpoint prediction, the head of the queue first (open
items by priority, then the rest), in batches of the endpoint's size, up to
`ENDPOINT_ITEMS_PER_RUN`; each batch is one POST through `annotations.outbound_http` (the SSRF
rules, redirects checked, the endpoint's timeout, a capped answer), checked strictly
(`curation.endpoint_protocol`) and stored as `PreAnnotation`s named `endpoint:<model version or
host>`, replacing the item's earlier endpoint prediction. A failure is recorded and ends the
run; the next waits for the backoff (`annotations.prediction_endpoint.endpoint_failed`). When
the endpoint reports a new model version, every item's prediction is out of date and is asked
again, head first; with every item predicted, the head is asked again every
`ENDPOINT_CHECK_SECONDS` to learn of one. After storing, the queue is ranked again if the
endpoint ranks it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from annotations.endpoint_models import ENDPOINT_MODEL_PREFIX, PredictionEndpoint
from annotations.models import Item, PreAnnotation, Project
from annotations.preannotations import PredictionIn, predictions_save
from annotations.prediction_endpoint import (
    endpoint_caught_up,
    endpoint_failed,
    endpoint_lease,
    endpoint_release,
    endpoint_succeeded,
)
from curation import recycling
from curation.endpoint_protocol import EndpointAnswerError, answer_parse, request_body

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

__all__ = ["RunResult", "endpoint_due", "endpoint_run", "items_to_predict"]

USER_AGENT = "dataprepops-endpoint/1"


@dataclass
class RunResult:
    predicted: int = 0
    batches: int = 0
    error: str = ""
    ranked: int = 0


def _current(project: Project, name: str):
    return PreAnnotation.objects.filter(item=OuterRef("pk"), model_name=name)


def items_to_predict(
    project: Project, model_name: str, limit: int, after: Item | None = None
) -> list[Item]:
    """Up to `limit` items without a prediction under `model_name`: open items by queue
    priority (the walk of item_queue_idx), then the others by id; after `after` (the last item
    of the run's previous batch) so a run walks the predicted head once, not once a batch."""
    missing = Item.objects.filter(project=project).exclude(Exists(_current(project, model_name)))
    open_items = missing.filter(needs_annotation=True)
    rest = missing.filter(needs_annotation=False)
    if after is not None and after.needs_annotation:
        open_items = open_items.filter(
            Q(priority__lt=after.priority) | Q(priority=after.priority, id__gt=after.pk)
        )
    elif after is not None:
        open_items, rest = open_items.none(), rest.filter(id__gt=after.pk)
    items = list(open_items.order_by("-priority", "id")[:limit])
    if len(items) < limit:
        items += list(rest.order_by("id")[: limit - len(items)])
    return items


def _check_due(endpoint: PredictionEndpoint, now: datetime) -> bool:
    """Time to ask again for the head of the queue, predicted already: the answer tells
    whether the endpoint's model changed (`ENDPOINT_CHECK_SECONDS` after the last success)."""
    last = endpoint.last_success_at
    return last is None or now - last >= timedelta(seconds=settings.ENDPOINT_CHECK_SECONDS)


def _head(project: Project, limit: int) -> list[Item]:
    return list(
        Item.objects.filter(project=project, needs_annotation=True).order_by("-priority", "id")[
            :limit
        ]
    )


def endpoint_due(project_id: int, now: datetime | None = None) -> bool:
    """The endpoint is enabled, past its backoff, and the last run left items, the project's
    items changed since, or the check for a new model version is due. A query or two: the
    scheduler asks after every training run."""
    now = now or timezone.now()
    endpoint = (
        PredictionEndpoint.objects.filter(project_id=project_id, enabled=True)
        .select_related("project")
        .first()
    )
    if endpoint is None:
        return False
    if endpoint.next_attempt_at is not None and endpoint.next_attempt_at > now:
        return False
    if endpoint.caught_up_items != endpoint.project.item_count:
        return True
    return _check_due(endpoint, now) and bool(_head(endpoint.project, 1))


def _headers(endpoint: PredictionEndpoint) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
    }
    if endpoint.auth_header:
        headers["Authorization"] = endpoint.auth_header
    return headers


def endpoint_run(
    project_id: int,
    *,
    budget: int | None = None,
    transport: httpx.BaseTransport | None = None,
    now: datetime | None = None,
) -> RunResult:
    """Predict up to `budget` items (`ENDPOINT_ITEMS_PER_RUN`) in batches; stop at the first
    failure (recorded). Does nothing while the endpoint is disabled, backing off, or in
    another worker's run."""
    result = RunResult()
    endpoint = (
        PredictionEndpoint.objects.filter(project_id=project_id, enabled=True)
        .select_related("project")
        .first()
    )
    moment = now or timezone.now()
    if endpoint is None or (endpoint.next_attempt_at and endpoint.next_attempt_at > moment):
        return result
    if not endpoint_lease(endpoint, now=moment):
        return result  # another worker's run has it
    try:
        _run(endpoint, result, budget, transport, now, moment)
    finally:
        endpoint_release(endpoint)
    if result.predicted and endpoint.rank_queue:
        from curation import trainer  # the learner's module: imported where it runs

        result.ranked = trainer.rank_by_endpoint(endpoint.project_id)
    return result


def _run(
    endpoint: PredictionEndpoint,
    result: RunResult,
    budget: int | None,
    transport: httpx.BaseTransport | None,
    now: datetime | None,
    moment: datetime,
) -> None:
    """The batches of one leased run (`endpoint_run`)."""
    from annotations import outbound_http  # the HTTP client: loaded by the worker only

    project = endpoint.project
    budget = settings.ENDPOINT_ITEMS_PER_RUN if budget is None else budget
    classes = project.class_names().offered
    after: Item | None = None
    caught_up = False
    while result.predicted < budget:
        if result.batches:
            recycling.checkpoint()  # a retiring worker leaves the other batches to the next
        wanted = min(endpoint.batch_size, budget - result.predicted)
        name = endpoint.model_name()
        items = items_to_predict(project, name, wanted, after)
        if not items and after is not None:
            items = items_to_predict(project, name, wanted)  # a new version: from the top
        if not items and not result.batches and _check_due(endpoint, moment):
            items = _head(project, wanted)  # predicted already: is the model still the same?
        if not items:
            caught_up = True
            break
        after = items[-1]
        endpoint_lease(endpoint, now=timezone.now(), renew=True)
        body, sent = request_body(project, items)
        if not sent:
            break  # only unreadable images left: nothing to ask
        outcome = outbound_http.post(
            endpoint.url,
            body,
            _headers(endpoint),
            timeout=float(endpoint.timeout_seconds),
            max_body=settings.ENDPOINT_MAX_RESPONSE_BYTES,
            transport=transport,
        )
        result.batches += 1
        error = outcome.error
        if not error and outcome.truncated:
            error = f"The answer is longer than {settings.ENDPOINT_MAX_RESPONSE_BYTES:,} bytes."
        answer = None
        if not error:
            try:
                answer = answer_parse(
                    outcome.body,
                    ids=[item.external_id for item in sent],
                    classes=classes,
                    multi_label=project.is_multi_label,
                )
            except EndpointAnswerError as exc:
                error = f"Answer refused, nothing stored: {exc}"
        if answer is None:
            endpoint_failed(endpoint, error=error, latency_ms=outcome.latency_ms, now=now)
            result.error = endpoint.last_error
            logger.warning("prediction endpoint of project %s: %s", project.pk, error)
            break
        _store(project, endpoint, sent, answer.scores, answer.model_version)
        endpoint_succeeded(
            endpoint,
            items=len(sent),
            model_version=answer.model_version,
            latency_ms=outcome.latency_ms,
            now=now,
        )
        result.predicted += len(sent)
        if endpoint.model_name() != name:
            after = None  # a new model version: every item again, head first
    if not result.error:
        item_count = Project.objects.filter(pk=project.pk).values_list("item_count", flat=True)
        endpoint_caught_up(endpoint, item_count=item_count.first() if caught_up else None)


def _store(
    project: Project,
    endpoint: PredictionEndpoint,
    items: list[Item],
    scores: dict[str, dict[str, float]],
    model_version: str,
) -> None:
    """Store one batch under the answer's model name, replacing the items' earlier endpoint
    predictions (of any version), in one transaction."""
    name = endpoint.model_name(model_version)
    multi = project.is_multi_label
    rows = []
    for item in items:
        p = scores[item.external_id]
        if multi:
            labels = tuple(c for c, q in p.items() if q >= 0.5)
            sure = min((q if q >= 0.5 else 1 - q) for q in p.values())
        else:
            top = max(p, key=p.__getitem__)
            labels, sure = (top,), p[top]
        rows.append((item.pk, PredictionIn(name, labels, p, round(sure, 6))))
    with transaction.atomic():
        PreAnnotation.objects.filter(
            item_id__in=[item.pk for item in items], model_name__startswith=ENDPOINT_MODEL_PREFIX
        ).exclude(model_name=name).delete()
        predictions_save(project, rows)
