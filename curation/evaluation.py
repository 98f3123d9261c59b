"""The evaluation slice, scored test-then-train: the honest accuracy the app shows.

The trainer weaves evaluation items, drawn uniformly at random from the open items, into the
ranked head (`eval_items_weave`); each one gets the prediction of every model that has not seen
its label (`eval_predict`, after each run), the stored prediction is scored when the label
arrives (`eval_resolve`, before the model learns it), and the resolved items give the accuracy
on random items with its Wilson interval (`eval_summary`). See `curation.models.EvalSample`.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotations.models import Project
from curation.accuracy import eval_summary as eval_summary
from curation.learner import IncrementalLearner
from curation.models import EvalSample, ProjectTraining
from curation.pool_sample import float_array, int_array, random_open_items

__all__ = ["eval_items_weave", "eval_predict", "eval_resolve", "eval_summary"]

Label = str | list[str]


def eval_resolve(*, project: Project, changed: set[int], labels: dict[int, Label]) -> None:
    """Score the stored predictions of evaluation items whose label just arrived.

    The stored prediction was made by a model that had not seen the label (test-then-train);
    right after this the item joins training like any other.
    """
    if not changed:
        return
    pending = EvalSample.objects.filter(project=project, item_id__in=changed, resolved_at=None)
    now = timezone.now()
    resolved = []
    for sample in pending:
        if sample.predicted_by is None:
            # Labelled before any model predicted it: it cannot be scored honestly any more.
            sample.delete()
            continue
        truth = labels.get(sample.item_id)
        if truth is None:  # skipped: stays pending; it may still be answered
            continue
        truth_set = sorted([truth] if isinstance(truth, str) else truth)
        sample.truth = truth_set
        sample.correct = sorted(sample.predicted) == truth_set
        sample.resolved_at = now
        resolved.append(sample)
    EvalSample.objects.bulk_update(resolved, ["truth", "correct", "resolved_at"])


def eval_predict(*, learner: IncrementalLearner, X: Any, kept: list[int], version: int) -> None:
    """Record model `version`'s out-of-sample guess for each open evaluation item of `kept`,
    whose feature rows are `X` (the trainer keeps them across runs)."""
    if not kept or learner.n_labels == 0:
        return
    proba = learner.predict_proba(X)
    samples = {s.item_id: s for s in EvalSample.objects.filter(item_id__in=kept)}
    for row, item_id in enumerate(kept):
        sample = samples.get(item_id)
        if sample is None:
            continue
        p = proba[row]
        if learner.multi_label:
            sample.predicted = [c for c, q in zip(learner.classes, p, strict=True) if q >= 0.5]
            sample.confidence = float(np.prod(np.where(p >= 0.5, p, 1 - p)))
        else:
            sample.predicted = [learner.classes[int(p.argmax())]]
            sample.confidence = float(p.max())
        sample.predicted_by = version
    # Never overwrite a prediction that has been scored already (another worker may have
    # processed the label meanwhile): every update is guarded by resolved_at IS NULL.
    if connection.vendor == "postgresql":
        rows = list(samples.values())
        table = connection.ops.quote_name(EvalSample._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} e SET predicted = v.p::jsonb, confidence = v.c, "
                "predicted_by = %s FROM unnest(%s::bigint[], %s::text[], %s::float8[]) "
                "AS v(id, p, c) WHERE e.id = v.id AND e.resolved_at IS NULL",
                [
                    version,
                    int_array([r.pk for r in rows]),
                    [json.dumps(r.predicted) for r in rows],
                    float_array([r.confidence for r in rows]),
                ],
            )
        return
    with transaction.atomic():
        for sample in samples.values():
            EvalSample.objects.filter(pk=sample.pk, resolved_at=None).update(
                predicted=sample.predicted,
                confidence=sample.confidence,
                predicted_by=sample.predicted_by,
            )


# --------------------------------------------------------------------------------------------
# Drawing the evaluation items and placing them in the ranked head
# --------------------------------------------------------------------------------------------


def _eval_items_draw(project: Project, wanted: int, rng: np.random.Generator) -> list[int]:
    """`wanted` evaluation items: open ones first, then fresh uniformly random open items.
    Drawn whether or not the model would have picked them: being random is the point."""
    if wanted <= 0:
        return []
    open_samples = list(
        EvalSample.objects.filter(project=project, resolved_at=None, item__needs_annotation=True)
        .order_by("id")
        .values_list("item_id", flat=True)[:wanted]
    )
    missing = wanted - len(open_samples)
    if missing > 0:
        have = set(open_samples)
        drawn = random_open_items(project, missing + len(have), rng, include_ranked=True)
        fresh = [i for i in drawn if i not in have][:missing]
        if fresh:  # an item is evaluated once: one that was resolved before is not drawn again
            used = EvalSample.objects.filter(project=project, item_id__in=fresh)
            taken = set(used.values_list("item_id", flat=True))
            fresh = [i for i in fresh if i not in taken]
        EvalSample.objects.bulk_create([EvalSample(project=project, item_id=i) for i in fresh])
        open_samples += fresh
    return open_samples


def eval_items_weave(
    project: Project, training: ProjectTraining, ranked: list[int], rng: np.random.Generator
) -> tuple[list[int], list[int]]:
    """Put evaluation items at random places of the ranked head: each place, the top one
    included, holds one with probability `eval_share`. The head is rewritten after every label,
    so about that share of the items served are evaluation items."""
    if training.eval_share <= 0 or not ranked:
        return ranked, []
    slots = np.flatnonzero(rng.random(len(ranked)) < training.eval_share).tolist()
    evals = _eval_items_draw(project, len(slots), rng)
    held_out = set(evals)
    rest = iter([i for i in ranked if i not in held_out])
    placed = iter(evals)
    woven, slot_set = [], set(slots[: len(evals)])
    for position in range(len(ranked)):
        source = placed if position in slot_set else rest
        item_id = next(source, None)
        if item_id is None:
            item_id = next(rest if source is placed else placed, None)
        if item_id is not None:
            woven.append(item_id)
    return woven, evals
