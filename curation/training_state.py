"""A training worker's in-memory view of one project (`ProjectState`) and the feature rows it
keeps across runs: the labelled items' (stacked into a training set incrementally) and the
open evaluation items'. Rebuilt from the database whenever in doubt (`curation.trainer`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import scipy.sparse as sp

from annotations.models import Project
from curation.features import item_features
from curation.featurizers import Featurizer
from curation.learner import IncrementalLearner
from curation.pool_sample import PoolSample
from curation.ranking_write import Scores

__all__ = ["Label", "ProjectState", "eval_rows", "training_set"]

Label = str | list[str]


@dataclass
class ProjectState:
    """A worker's in-memory view of one project; rebuilt from the database whenever in doubt."""

    project_id: int
    schema: tuple
    featurizer: Featurizer
    learner: IncrementalLearner
    labels: dict[int, Label] = field(default_factory=dict)
    rows: dict[int, Any] = field(default_factory=dict)  # item id → feature row (1 × d)
    answers: dict[int, int] = field(default_factory=dict)  # item id → non-skipped answers
    watermark: datetime | None = None  # latest GoldLabel.updated_at consumed
    sample: PoolSample = field(default_factory=PoolSample)
    runs: int = 0
    deferred: int = 0  # runs in a row that left the sample's rotation for later
    pending_eval: list[int] = field(default_factory=list)  # open evaluation items
    eval_rows: dict[int, Any] = field(default_factory=dict)  # their feature rows (1 × d)
    # The last training set's ids and stacked rows (`_stacked_rows`).
    stacked: tuple[list[int], Any] = field(default_factory=lambda: ([], None))
    version: int | None = None  # the model version the learner was saved as
    scores: Scores | None = None  # the sample's probabilities this run, if ranked
    # The imported predictions (count, latest change) the queue was last ranked by, before any
    # label (`curation.prediction_ranking`).
    predictions_ranked: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def training_set(state: ProjectState) -> tuple[Any, list[Label]]:
    ids = sorted(i for i in state.labels if i in state.rows)
    if not ids:
        return np.zeros((0, state.featurizer.n_features)), []
    return _stacked_rows(state, ids), [state.labels[i] for i in ids]


def _stack(rows: list[Any]) -> Any:
    return sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.vstack(rows)


def _stacked_rows(state: ProjectState, ids: list[int]) -> Any:
    """The feature rows of `ids` (sorted) stacked in order, built from the previous run's stack
    when labels were only added: stacking every 1-row matrix again cost ~5 µs a label, each run
    (16 ms at 3,000 labels)."""
    cached_ids, cached = state.stacked
    if cached is not None and cached_ids == ids:
        return cached
    known = set(cached_ids)
    if cached is not None and known.issubset(ids):
        new = [i for i in ids if i not in known]
        joined = _stack([cached, *(state.rows[i] for i in new)])
        X = joined[np.argsort(np.array(cached_ids + new), kind="stable")]
    else:
        X = _stack([state.rows[i] for i in ids])
    state.stacked = (ids, X)
    return X


def eval_rows(project: Project, state: ProjectState) -> tuple[Any, list[int]]:
    """Feature rows of the open evaluation items and their ids. They stay open over many runs
    and each run predicts them again, so their rows are kept (from the pool sample when it holds
    them) instead of read and hashed again every run."""
    ids = state.pending_eval
    cache = state.eval_rows
    for gone in set(cache).difference(ids):
        del cache[gone]
    missing = [i for i in ids if i not in cache]
    if missing:
        cache.update(state.sample.rows(missing))
        unseen = [i for i in missing if i not in cache]
        if unseen:
            X, kept = item_features(project, state.featurizer, unseen)
            for row, item_id in enumerate(kept):
                cache[item_id] = X[row : row + 1]
    kept = [i for i in ids if i in cache]
    if not kept:
        return None, []
    rows = [cache[i] for i in kept]
    return (sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.vstack(rows)), kept
