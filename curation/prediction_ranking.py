"""Cold start from a team's own predictions: until our model has seen every class, the queue is
ranked by how unsure the imported predictions (`annotations.PreAnnotation`) are.

A team that brings a model has already said what it does not know; labelling its least sure
items first is uncertainty sampling from the first label, where our own model can only serve
typical items (`curation.cold_start`) until it has seen every class. The uncertainty of one
prediction is 1 - margin (top two class probabilities) when it gave probabilities, else
1 - its score; multi-label, the least decided class (1 - |2p - 1|). A prediction without either
says nothing about its doubt and ranks after those that do, ahead of items without one.

Candidates: every open item with a prediction when there are at most `CANDIDATES` of them, else
a uniform random sample of the open items (as the trainer's pool sample), so a run costs the same
at 10k and 1M items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from django.db import connection

from annotations.models import Item, PreAnnotation, Project
from curation.pool_sample import POOL_SAMPLE, random_open_items

__all__ = [
    "CANDIDATES",
    "prediction_uncertainty",
    "predictions_fingerprint",
    "uncertain_items",
    "uncertainties",
]

#: Open items looked at per run, at most.
CANDIDATES = POOL_SAMPLE
#: The uncertainty given to a prediction with neither scores nor a score: below any measured one.
UNMEASURED = -1.0


def prediction_uncertainty(
    labels: Sequence[str],
    scores: dict[str, float] | None,
    score: float | None,
    *,
    multi_label: bool,
) -> float:
    """How unsure one prediction is, in [0, 1] (1: a coin toss); UNMEASURED without numbers."""
    if scores:
        p = sorted(scores.values(), reverse=True)
        if multi_label:
            return 1.0 - min(abs(2.0 * q - 1.0) for q in p)
        second = p[1] if len(p) > 1 else max(0.0, 1.0 - p[0])  # the rest of the mass, at best
        return 1.0 - (p[0] - second)
    if score is not None:
        return 1.0 - float(score)
    return UNMEASURED


def uncertainties(project: Project, item_ids: Sequence[int]) -> dict[int, float]:
    """The uncertainty of each of `item_ids` that has a prediction (the most unsure of its
    models': any model in doubt is worth a human look)."""
    out: dict[int, float] = {}
    multi = project.is_multi_label
    for start in range(0, len(item_ids), 5000):
        chunk = list(item_ids[start : start + 5000])
        rows = PreAnnotation.objects.filter(item_id__in=chunk).values_list(
            "item_id", "labels", "scores", "score"
        )
        for item_id, labels, scores, score in rows:
            u = prediction_uncertainty(labels, scores, score, multi_label=multi)
            if u > out.get(item_id, UNMEASURED - 1):
                out[item_id] = u
    return out


def uncertain_items(
    project: Project, k: int, rng: np.random.Generator, *, candidates: Sequence[int] | None = None
) -> list[int]:
    """Up to `k` open items with a prediction, most unsure first (ties in random order). From
    `candidates` when given (the trainer's pool sample), else as the module says."""
    if candidates is None:
        candidates = _candidates(project, rng)
    found = uncertainties(project, candidates)
    if not found:
        return []
    ids = np.fromiter(found, dtype=np.int64, count=len(found))
    u = np.fromiter(found.values(), dtype=np.float64, count=len(found))
    order = np.lexsort((rng.random(len(ids)), -u))[:k]
    return ids[order].tolist()


def _candidates(project: Project, rng: np.random.Generator) -> list[int]:
    predicted = _open_predicted(project, CANDIDATES + 1)
    if len(predicted) <= CANDIDATES:
        return predicted
    return random_open_items(project, CANDIDATES, rng, include_ranked=True)


def _open_predicted(project: Project, limit: int) -> list[int]:
    """Up to `limit` open items of the project that have a prediction."""
    if connection.vendor == "postgresql":
        items = connection.ops.quote_name(Item._meta.db_table)
        pre = connection.ops.quote_name(PreAnnotation._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT p.item_id FROM {pre} p JOIN {items} i ON i.id = p.item_id "
                "WHERE p.project_id = %s AND i.needs_annotation LIMIT %s",
                [project.pk, limit],
            )
            return [row[0] for row in cursor.fetchall()]
    rows = (
        PreAnnotation.objects.filter(project=project, item__needs_annotation=True)
        .values_list("item_id", flat=True)
        .distinct()[:limit]
    )
    return list(rows)


def predictions_fingerprint(project: Project) -> tuple[int, object] | None:
    """(how many, latest change) of the project's predictions, None without any: a run that
    ranked by them need not rank again until this changes."""
    from django.db.models import Count, Max

    row = PreAnnotation.objects.filter(project=project).aggregate(
        n=Count("id"), at=Max("updated_at")
    )
    return (row["n"], row["at"]) if row["n"] else None
