"""Likely label errors: confident learning on out-of-sample probabilities (an analysis run of
the training worker, `curation.analysis_runs`).

Every item with a gold label gets a score, how likely its label is wrong (1 − cleanlab's
self-confidence label quality), the class the model suggests instead (the argmax of its
out-of-sample probabilities) and those probabilities per class; the items cleanlab's
`find_label_issues` picks (its default: prune by noise rate) are flagged. The probabilities
come from k-fold cross-validation of the project's learner kind on its features
(`curation.out_of_sample`), so no item is judged by a model that learnt its label.

Single-label projects only: the result of a multi-label project says so and flags nothing.
Classes with fewer than MIN_PER_CLASS labels cannot be cross-validated and their items are left
out (the summary says which); below two such classes the run flags nothing and says why.

Cost at 100k labelled text items (2 cores, one BLAS thread): hashing the texts ~15 s of CPU;
lbfgs's folds would cost minutes, so large projects (LARGE) get three folds fitted by saga, a
few passes over the rows (see LARGE_MAX_ITER for the measurements). The flags' lifecycle (sent to
review, fixed, dismissed) is in `curation.label_issues`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection, transaction
from django.utils import timezone

from annotations.models import GoldLabel, Project
from curation.analysis_runs import analysis_growth
from curation.dataset_models import AnalysisRun, LabelIssue
from curation.features import item_features
from curation.featurizers import featurizer_for
from curation.learner import DEFAULT_C, DEFAULT_MAX_ITER
from curation.models import ProjectTraining
from curation.out_of_sample import out_of_sample_proba

__all__ = ["MIN_LABELS", "MIN_PER_CLASS", "is_due", "run"]

#: Gold labels before an automatic run (a request runs with fewer, and says what is missing).
MIN_LABELS = 30
#: Labels a class needs to take part (each fold must see it).
MIN_PER_CLASS = 5
FOLDS = 5
#: From this many labels on: LARGE_FOLDS folds of the same logistic regression fitted by saga
#: for LARGE_MAX_ITER passes over the rows instead of lbfgs. Measured on 100k tweets with 10%
#: injected noise (CPU s of the folds; precision, recall of the flags): lbfgs 5 folds × 100
#: iterations 121 s; lbfgs 3 × 40 iterations ~40 s, 0.61 / 0.83; saga 3 × 5 passes 7.8 s,
#: 0.875 / 0.864 (lbfgs stopped early is further from the optimum than 5 saga passes).
LARGE = 20_000
LARGE_FOLDS = 3
LARGE_MAX_ITER = 5
#: Items featurized (and rows written) per step; progress is reported between steps.
CHUNK = 2_000

Status = LabelIssue.Status
#: A flag a person closed stays closed while the item's gold label is the one it was closed with.
HUMAN = (Status.IN_REVIEW, Status.FIXED, Status.DISMISSED)

Report = Callable[[float, float, str], None]


def _gold_count(project: Project) -> int:
    # An index-only count on gold_labelled_idx.
    return GoldLabel.objects.filter(project=project, labels__isnull=False).count()


def is_due(project: Project, last_run: AnalysisRun | None) -> bool:
    """Due when the gold labels grew by the project's `analysis_growth` share since the last
    run (the first run: at MIN_LABELS); never for multi-label projects."""
    if project.is_multi_label:
        return False
    gold = _gold_count(project)
    if gold < MIN_LABELS:
        return False
    if last_run is None:
        return True
    return gold >= max(MIN_LABELS, math.ceil(last_run.basis * (1 + analysis_growth(project))))


def run(project: Project, run: AnalysisRun, report: Report) -> dict[str, Any]:
    """Score every gold label of `project`, write its `LabelIssue` rows and return the summary."""
    cpu = {"start": time.thread_time()}
    version = (
        ProjectTraining.objects.filter(project=project)
        .values_list("current_version__version", flat=True)
        .first()
    )
    run.model_version = version
    if project.is_multi_label:
        return {
            "basis": _gold_count(project),
            "summary": "Not run: label errors are found for single-label projects only.",
            "labels": 0,
            "flagged": 0,
            "excluded": "multi-label",
        }
    classes = project.class_names()
    index = {name: k for k, name in enumerate(classes)}
    rows = (
        GoldLabel.objects.filter(project=project, labels__isnull=False)
        .order_by("item_id")
        .values_list("item_id", "labels")
    )
    ids, y = [], []
    for item_id, labels in rows.iterator(chunk_size=10_000):
        if labels and labels[0] in index:
            ids.append(item_id)
            y.append(index[labels[0]])
    basis = len(ids)
    counts = np.bincount(np.asarray(y, dtype=int), minlength=len(classes))
    kept = np.flatnonzero(counts >= MIN_PER_CLASS)
    short = [f"{classes[k]} {counts[k]}" for k in np.flatnonzero(counts < MIN_PER_CLASS)]
    if kept.size < 2:
        return {
            "basis": basis,
            "summary": f"Needs at least {MIN_PER_CLASS} labels per class in two classes "
            f"(have: {', '.join(f'{c} {n}' for c, n in zip(classes, counts, strict=True))}).",
            "labels": basis,
            "flagged": 0,
        }
    # Only the classes with enough labels: their items, columns renumbered 0..len(kept)-1.
    column = {int(k): c for c, k in enumerate(kept)}
    names = [classes[k] for k in kept]
    pairs = [(i, column[c]) for i, c in zip(ids, y, strict=True) if c in column]
    ids = [i for i, _ in pairs]
    target = np.array([c for _, c in pairs], dtype=int)

    X, ids, target = _features(project, ids, target, report)
    cpu["gold and features"] = time.thread_time()
    large = len(ids) >= LARGE
    folds = LARGE_FOLDS if large else FOLDS
    max_iter = LARGE_MAX_ITER if large else DEFAULT_MAX_ITER
    solver = "saga" if large else "lbfgs"

    def between_folds(done: int, total: int) -> None:
        report(0.4 + 0.5 * done / total, 1.0, f"Cross-validating: fold {done + 1} of {total}")

    proba, fitted = out_of_sample_proba(
        X, target, len(names), C=DEFAULT_C, max_iter=max_iter, folds=folds,
        solver=solver, between_folds=between_folds,
    )  # fmt: skip
    del X
    cpu["folds"] = time.thread_time()
    report(0.9, 1.0, "Finding label issues")
    flagged, quality = _confident_learning(target, proba)
    cpu["cleanlab"] = time.thread_time()
    written = _write(project, run, version, ids, names, target, proba, flagged, 1.0 - quality)
    cpu["write"] = time.thread_time()
    report(1.0, 1.0, "Done")
    summary = f"{int(flagged.sum())} likely label errors among {len(ids)} gold labels"
    if short:
        summary += f" (left out, too few labels: {', '.join(short)})"
    return {
        "basis": basis,
        "summary": summary,
        "labels": len(ids),
        "flagged": int(flagged.sum()),
        "raised": written["raised"],
        "kept_closed": written["kept_closed"],
        "left_out": basis - len(ids),
        "folds": fitted,
        "max_iter": max_iter,
        "solver": solver,
        # CPU seconds of each step (this thread), for the benchmark and the admin.
        "cpu_s": {
            step: round(cpu[step] - cpu[before], 2)
            for before, step in zip(cpu, list(cpu)[1:], strict=False)
        },
    }


def _features(
    project: Project, ids: list[int], target: np.ndarray, report: Report
) -> tuple[Any, list[int], np.ndarray]:
    """Feature rows of `ids` in steps of CHUNK (sparse text rows stay sparse, float32); items
    without features (an unreadable image) are left out with their targets."""
    featurizer = featurizer_for(project.item_kind)
    blocks, kept = [], []
    for start in range(0, len(ids), CHUNK):
        report(0.4 * start / len(ids), 1.0, f"Reading features: {start} of {len(ids)} items")
        X, found = item_features(project, featurizer, ids[start : start + CHUNK])
        blocks.append(X)
        kept.extend(found)
    X = sp.vstack(blocks, format="csr") if sp.issparse(blocks[0]) else np.vstack(blocks)
    if len(kept) < len(ids):
        position = {item_id: r for r, item_id in enumerate(ids)}
        target = target[[position[i] for i in kept]]
    return X, kept, target


def _confident_learning(target: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flagged mask, label quality) by cleanlab's defaults."""
    # Imported here: cleanlab brings pandas, which nothing else of the worker needs.
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    # Rows a fold could not predict (all zero) would divide by zero: uniform instead.
    empty = proba.sum(axis=1) <= 0
    if empty.any():
        proba[empty] = 1.0 / proba.shape[1]
    proba /= proba.sum(axis=1, keepdims=True)
    # n_jobs=1: cleanlab would fork a process per core, each a copy of this worker.
    flagged = find_label_issues(target, proba, n_jobs=1)
    quality = get_label_quality_scores(target, proba)
    return np.asarray(flagged, dtype=bool), np.asarray(quality, dtype=float)


def _write(
    project: Project,
    run: AnalysisRun,
    version: int | None,
    ids: list[int],
    names: list[str],
    target: np.ndarray,
    proba: np.ndarray,
    flagged: np.ndarray,
    score: np.ndarray,
) -> dict[str, int]:
    """Upsert one row per item in chunks; a flag a person closed or sent to review keeps its
    status while the gold label is the one it was closed with (decided in the upsert itself,
    so a decision committed meanwhile is never written over). Rows of items no longer scored
    (no gold label, class left out) go, unless a person closed them."""
    now = timezone.now()
    suggested = proba.argmax(axis=1)
    before = set(
        LabelIssue.objects.filter(project=project, status__in=HUMAN).values_list(
            "item_id", flat=True
        )
    )
    for start in range(0, len(ids), CHUNK):
        part = slice(start, start + CHUNK)
        rows = [
            (
                item_id,
                json.dumps([names[t]]),
                round(float(s), 6),
                names[g],
                json.dumps({n: round(float(p), 4) for n, p in zip(names, probs, strict=True)}),
                Status.FLAGGED if f else Status.NONE,
            )
            for item_id, t, s, g, probs, f in zip(
                ids[part], target[part], score[part], suggested[part], proba[part], flagged[part],
                strict=True,
            )
        ]  # fmt: skip
        with transaction.atomic():
            if connection.vendor == "postgresql":
                _upsert_postgresql(project, run, version, rows, now)
            else:
                _upsert_portable(project, run, version, rows, now)
    LabelIssue.objects.filter(project=project).exclude(run=run).exclude(status__in=HUMAN).delete()
    kept_closed = LabelIssue.objects.filter(
        project=project, run=run, item_id__in=before, status__in=HUMAN
    ).count()
    raised = LabelIssue.objects.filter(
        project=project, run=run, item_id__in=before, status=Status.FLAGGED
    ).count()
    return {"kept_closed": kept_closed, "raised": raised}


_UPSERT = """
INSERT INTO {table} (item_id, project_id, gold, score, suggested, probabilities, model_version,
                     run_id, status, closed_by_id, closed_at, updated_at)
SELECT v.item_id, %s, v.gold::jsonb, v.score, v.suggested, v.probabilities::jsonb, %s, %s,
       v.status, NULL, NULL, %s
FROM unnest(%s::bigint[], %s::text[], %s::float8[], %s::text[], %s::text[], %s::text[])
     AS v(item_id, gold, score, suggested, probabilities, status)
ON CONFLICT (item_id) DO UPDATE SET
    score = EXCLUDED.score, suggested = EXCLUDED.suggested,
    probabilities = EXCLUDED.probabilities, model_version = EXCLUDED.model_version,
    run_id = EXCLUDED.run_id, updated_at = EXCLUDED.updated_at,
    status = CASE WHEN {keep} THEN t.status ELSE EXCLUDED.status END,
    closed_by_id = CASE WHEN {keep} THEN t.closed_by_id ELSE NULL END,
    closed_at = CASE WHEN {keep} THEN t.closed_at ELSE NULL END,
    decision_id = CASE WHEN {keep} THEN t.decision_id ELSE NULL END,
    gold = CASE WHEN {keep} THEN t.gold ELSE EXCLUDED.gold END
"""
# In review: the decision will close it. Fixed or dismissed: closed for this gold label.
_KEEP = "(t.status = 'review' OR (t.status IN ('fixed', 'dismissed') AND t.gold = EXCLUDED.gold))"


def _upsert_postgresql(
    project: Project, run: AnalysisRun, version: int | None, rows: list[tuple], now
) -> None:
    table = connection.ops.quote_name(LabelIssue._meta.db_table)
    sql = _UPSERT.format(table=f"{table} AS t", keep=_KEEP)
    columns = list(zip(*rows, strict=True))
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk, version, run.pk, now, *map(list, columns)])


def _upsert_portable(
    project: Project, run: AnalysisRun, version: int | None, rows: list[tuple], now
) -> None:
    """The same for other databases: the kept statuses are read first, under a row lock."""
    ids = [r[0] for r in rows]
    closed = {
        item_id: (status, gold)
        for item_id, status, gold in LabelIssue.objects.select_for_update()
        .filter(item_id__in=ids, status__in=HUMAN)
        .values_list("item_id", "status", "gold")
    }
    objs = []
    keep = set()
    for item_id, gold, score, suggested, probabilities, status in rows:
        gold = json.loads(gold)
        old = closed.get(item_id)
        if old is not None and (old[0] == Status.IN_REVIEW or old[1] == gold):
            keep.add(item_id)
        objs.append(
            LabelIssue(
                item_id=item_id, project=project, gold=gold, score=score, suggested=suggested,
                probabilities=json.loads(probabilities), model_version=version, run=run,
                status=status, updated_at=now,
            )
        )  # fmt: skip
    if keep:  # written without their status and closing fields
        LabelIssue.objects.bulk_create(
            [o for o in objs if o.item_id in keep],
            update_conflicts=True,
            unique_fields=["item"],
            update_fields=["score", "suggested", "probabilities", "model_version", "run",
                           "updated_at"],
        )  # fmt: skip
    LabelIssue.objects.bulk_create(
        [o for o in objs if o.item_id not in keep],
        update_conflicts=True,
        unique_fields=["item"],
        update_fields=["gold", "score", "suggested", "probabilities", "model_version", "run",
                       "status", "closed_by", "closed_at", "decision", "updated_at"],
    )  # fmt: skip
