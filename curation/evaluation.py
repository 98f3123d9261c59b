"""The evaluation slice, scored test-then-train: the honest accuracy the app shows.

The trainer weaves evaluation items, drawn uniformly at random from the open items, into the
ranked head (`curation.trainer`); here each one gets the prediction of every model that has not
seen its label (`eval_predict`, after each run), the stored prediction is scored when the label
arrives (`eval_resolve`, before the model learns it), and the resolved items give the accuracy
on random items with its Wilson interval (`eval_summary`). See `curation.models.EvalSample`.
"""

from __future__ import annotations

import json

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from annotations.models import Project
from curation.accuracy import eval_summary as eval_summary
from curation.features import item_features
from curation.featurizers import Featurizer
from curation.learner import IncrementalLearner
from curation.models import EvalSample

__all__ = ["eval_predict", "eval_resolve", "eval_summary"]

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


def eval_predict(
    *,
    project: Project,
    learner: IncrementalLearner,
    featurizer: Featurizer,
    ids: list[int],
    version: int,
) -> None:
    """Record model `version`'s out-of-sample guess for each open evaluation item of `ids`."""
    if not ids or learner.n_labels == 0:
        return
    X, kept = item_features(project, featurizer, ids)
    if not kept:
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
                    [r.pk for r in rows],
                    [json.dumps(r.predicted) for r in rows],
                    [r.confidence for r in rows],
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
