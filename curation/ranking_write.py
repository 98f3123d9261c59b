"""Writing the ranked head of the queue: each item's priority and the model's guess for it, in
one UPDATE by the training worker.

The guess (`Item.suggestion`, with the version that made it) comes from the class
probabilities the run already computed to rank its pool sample, so storing it costs neither a
prediction nor a round trip; the annotate page then reads it from the item rows it loads anyway
(`curation.suggest`). Items of the evaluation slice that are still open get none, decided in
the statement itself, whoever drew them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from django.db import connection

from annotations.models import PINNED_PRIORITY, Item, Project
from curation.models import EvalSample
from curation.pool_sample import float_array, int_array
from curation.suggest import item_suggestion

__all__ = ["Scores", "head_suggestions", "ranking_write"]

#: (pool-sample item ids, their class probabilities as rows) from the run's model.
Scores = tuple[Sequence[int], Any]


def head_suggestions(
    classes: Sequence[str], scores: Scores | None, ids: Sequence[int], *, multi_label: bool
) -> list[str | None]:
    """The guess for each of `ids` as JSON text (`curation.suggest.Suggestion`), None for an
    item the run did not score (not in its sample, or no scores: a cold run)."""
    if scores is None or not ids:
        return [None] * len(ids)
    sample_ids, proba = scores
    row_of = {item_id: row for row, item_id in enumerate(sample_ids)}
    rows = [row_of.get(item_id, -1) for item_id in ids]
    scored = [r for r in rows if r >= 0]
    if not scored:
        return [None] * len(ids)
    P = np.asarray(proba[scored], dtype=float)
    if multi_label:
        texts = [json.dumps(item_suggestion(classes, p, multi_label=True)) for p in P]
    else:
        # The common case, vectorised: a few thousand items a run.
        top = P.argmax(axis=1)
        sure = P[np.arange(len(P)), top].round(3)
        heads = [f'{{"labels": [{json.dumps(c)}], "p": ' for c in classes]
        texts = [f"{heads[t]}{float(p)!r}}}" for t, p in zip(top.tolist(), sure, strict=True)]
    found = iter(texts)
    return [next(found) if r >= 0 else None for r in rows]


def ranking_write(
    project: Project,
    ids: Sequence[int],
    priorities: Sequence[float],
    suggestions: Sequence[str | None],
    *,
    version: int | None,
) -> None:
    """Set each of `ids` (open, not pinned) to its priority and its guess by model `version`
    where `suggestions` has one; an item without keeps the guess it had (the page shows none
    once it is too old: `curation.suggest`). Open evaluation items get none."""
    if not ids:
        return
    table = connection.ops.quote_name(Item._meta.db_table)
    evals = connection.ops.quote_name(EvalSample._meta.db_table)
    # Unresolved evaluation items: one probe of the unique index on item_id per row.
    held_out = f"EXISTS (SELECT 1 FROM {evals} e WHERE e.item_id = i.id AND e.resolved_at IS NULL)"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} i SET priority = v.p, suggestion = CASE WHEN {held_out} THEN NULL "
                "WHEN v.s IS NULL THEN i.suggestion ELSE v.s::jsonb END, suggestion_version = "
                "CASE WHEN v.s IS NULL THEN i.suggestion_version ELSE %s END "
                "FROM unnest(%s::bigint[], %s::float8[], %s::text[]) AS v(id, p, s) "
                "WHERE i.id = v.id AND i.project_id = %s AND i.priority < %s",
                [
                    version,
                    int_array(list(ids)),
                    float_array(list(priorities)),
                    list(suggestions),
                    project.pk,
                    PINNED_PRIORITY,
                ],
            )
        return
    # SQLite: one prepared statement run per row (bulk_update's CASE WHEN costs ~10x more).
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} AS i SET priority = %s, suggestion = CASE WHEN {held_out} THEN NULL "
            "WHEN %s IS NULL THEN suggestion ELSE %s END, suggestion_version = "
            "CASE WHEN %s IS NULL THEN suggestion_version ELSE %s END "
            "WHERE id = %s AND priority < %s",
            [
                (p, s, s, s, version, pk, PINNED_PRIORITY)
                for p, s, pk in zip(priorities, suggestions, ids, strict=True)
            ],
        )
