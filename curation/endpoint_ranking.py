"""Ranking the queue by a project's prediction endpoint (`annotations.PredictionEndpoint`).

While the endpoint is enabled with `rank_queue` on, the head of the queue comes from its
probabilities, scored by the project's strategy (`curation.strategies`: margin, entropy, least
confidence, random; the batch-diverse variant takes margin, as it needs our features), rather
than from our model: the team's model is presumably the better one, and ours keeps training
for the accuracy estimate and the suggestions. The trainer writes the head as it writes its own
(`curation.trainer._rank`), and the endpoint's run rewrites it after storing a batch.

Candidates: every open item with an endpoint prediction when there are at most `CANDIDATES`,
else a uniform random sample of the open items (the ranked head included) with theirs, so a run
costs the same at 10k and 1M items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.db import connection

from annotations.endpoint_models import ENDPOINT_MODEL_PREFIX, PredictionEndpoint
from annotations.models import Item, PreAnnotation, Project
from curation.models import BATCH_DIVERSE
from curation.pool_sample import POOL_SAMPLE, random_open_items
from curation.strategies import get_strategy, select
from curation.strategy_names import DEFAULT_STRATEGY

__all__ = ["CANDIDATES", "endpoint_order", "endpoint_ranks", "scores_matrix"]

#: Open items scored per ranking, at most: a quarter of our model's pool sample, as each costs
#: a JSON row read from the database at every training run, for a head of 500 items.
CANDIDATES = POOL_SAMPLE // 4


def endpoint_ranks(project: Project) -> bool:
    """True while the project's endpoint is enabled and ranks the queue."""
    return PredictionEndpoint.objects.filter(
        project=project, enabled=True, rank_queue=True
    ).exists()


def scores_matrix(
    rows: Sequence[dict[str, float]], classes: Sequence[str], *, multi_label: bool
) -> np.ndarray:
    """The probabilities as an (n, k) array in `classes` order (0 for a class not given);
    single-label rows renormalised to sum to 1 (an answer's rounding, a class added since),
    a row with nothing left uniform."""
    P = np.array([[float(s.get(c, 0.0)) for c in classes] for s in rows], dtype=np.float64)
    P = P.reshape(len(rows), len(classes))
    if multi_label or not len(rows):
        return np.clip(P, 0.0, 1.0)
    sums = P.sum(axis=1, keepdims=True)
    empty = sums[:, 0] <= 0
    P[empty] = 1.0
    sums[empty] = len(classes)
    return P / sums


def endpoint_order(
    project: Project, strategy: str, k: int, rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """(candidate item ids, the positions of the best `k` of them in rank order); empty when
    no open item has an endpoint prediction yet."""
    found = _candidate_scores(project, rng)
    if not found:
        return [], []
    classes = project.class_names().offered
    ids = list(found)
    P = scores_matrix(list(found.values()), classes, multi_label=project.is_multi_label)
    name = DEFAULT_STRATEGY if strategy == BATCH_DIVERSE else strategy
    try:
        scorer = get_strategy(name)
    except ValueError:
        scorer = get_strategy(DEFAULT_STRATEGY)
    scores = scorer(P, multi_label=project.is_multi_label, rng=rng)
    order = select(scores, min(k, len(ids)), exploration=0.0).tolist()
    return ids, order


def _candidate_scores(project: Project, rng: np.random.Generator) -> dict[int, dict]:
    """Endpoint scores of the candidate open items, by item id."""
    predicted = _open_predicted(project, CANDIDATES + 1)
    if len(predicted) > CANDIDATES:
        predicted = random_open_items(project, CANDIDATES, rng, include_ranked=True)
    out: dict[int, dict] = {}
    for start in range(0, len(predicted), 5000):
        rows = PreAnnotation.objects.filter(
            project=project,
            item_id__in=predicted[start : start + 5000],
            model_name__startswith=ENDPOINT_MODEL_PREFIX,
            scores__isnull=False,
        ).values_list("item_id", "scores")
        out.update(rows)
    return out


def _open_predicted(project: Project, limit: int) -> list[int]:
    """Up to `limit` open items of the project that have an endpoint prediction."""
    if connection.vendor == "postgresql":
        items = connection.ops.quote_name(Item._meta.db_table)
        pre = connection.ops.quote_name(PreAnnotation._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT p.item_id FROM {pre} p JOIN {items} i ON i.id = p.item_id "
                "WHERE p.project_id = %s AND p.model_name LIKE %s AND i.needs_annotation "
                "LIMIT %s",
                [project.pk, ENDPOINT_MODEL_PREFIX + "%", limit],
            )
            return [row[0] for row in cursor.fetchall()]
    rows = PreAnnotation.objects.filter(
        project=project, model_name__startswith=ENDPOINT_MODEL_PREFIX, item__needs_annotation=True
    ).values_list("item_id", flat=True)[:limit]
    return list(rows)
