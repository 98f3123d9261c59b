"""How good a model trained on a dataset version is: the project's learner and featurizer fit
on the version's train split and scored on its test split, stored on the version's row.

The list of versions then answers the data-centric question "did more, or cleaner, data
help?" with the same model each time. Test items keep their split across versions (the split
hashes the external id), so the test sets of two versions overlap in every item they share.

Text is featurized from the version's own rows (what the version holds, not today's items);
images from their stored feature vectors, which do not change with labels.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from annotations.models import Project
from curation.accuracy import wilson_interval
from curation.dataset_versions import labelled_gold, version_open
from curation.features import item_features
from curation.featurizers import featurizer_for
from curation.learner import IncrementalLearner
from curation.splits import TEST, TRAIN
from curation.version_models import DatasetVersion

logger = logging.getLogger(__name__)

__all__ = ["metrics_measure"]

#: Fewer labelled items than this in the train or test split: the metrics are skipped.
MIN_TRAIN = 10
MIN_TEST = 5


def metrics_measure(version: DatasetVersion) -> dict[str, Any]:
    """Fit and score the model of `version`, store the result on its row and return it; a
    failure is stored as such (and logged), never raised."""
    started = time.perf_counter()
    try:
        status, metrics = _measure(version)
    except Exception as exc:
        logger.exception("metrics of dataset version %s failed", version.pk)
        status, metrics = DatasetVersion.Metrics.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
    metrics["seconds"] = round(time.perf_counter() - started, 2)
    DatasetVersion.objects.filter(pk=version.pk).update(metrics_status=status, metrics=metrics)
    return metrics


def _measure(version: DatasetVersion) -> tuple[str, dict[str, Any]]:
    header, rows = version_open(version)
    classes = [c["name"] for c in header["classes"]]
    multi = header["project"]["labeling_mode"] == Project.LabelingMode.MULTI
    kind = header["project"]["item_kind"]
    parts: dict[str, tuple[list, list]] = {TRAIN: ([], []), TEST: ([], [])}
    for row in rows():
        labels = labelled_gold(row)
        if labels is None or row["split"] not in parts:
            continue
        data, targets = parts[row["split"]]
        data.append(row["item_id"] if kind == Project.ItemKind.IMAGE else row["text"])
        targets.append(labels if multi else labels[0])
    n_train, n_test = len(parts[TRAIN][1]), len(parts[TEST][1])
    base = {"train": n_train, "test": n_test, "model": "logistic regression", "features": kind}
    seen = {label for target in parts[TRAIN][1] for label in ([target] if not multi else target)}
    if n_train < MIN_TRAIN or n_test < MIN_TEST or len(seen) < 2:
        reason = (
            f"needs {MIN_TRAIN} labelled items of 2+ classes in train and {MIN_TEST} in test; "
            f"has {n_train} in train ({len(seen)} classes) and {n_test} in test"
        )
        return DatasetVersion.Metrics.SKIPPED, {**base, "reason": reason}
    featurizer = featurizer_for(kind)
    X_train, y_train = _features(version.project, featurizer, kind, *parts[TRAIN])
    X_test, y_test = _features(version.project, featurizer, kind, *parts[TEST])
    learner = IncrementalLearner(classes, multi_label=multi, n_features=featurizer.n_features)
    learner.fit(X_train, y_train)
    predicted = learner.predict(X_test)
    return DatasetVersion.Metrics.DONE, base | _scores(classes, multi, y_test, predicted)


def _features(project, featurizer, kind: str, data: list, targets: list):
    if kind != Project.ItemKind.IMAGE:
        return featurizer.transform(data), targets
    X, kept = item_features(project, featurizer, data)  # items deleted since are left out
    index = {item_id: i for i, item_id in enumerate(data)}
    return X, [targets[index[item_id]] for item_id in kept]


def _scores(classes: list[str], multi: bool, truth: list, predicted: list) -> dict[str, Any]:
    n = len(truth)
    if multi:
        Y_true, Y_pred = _indicator(classes, truth), _indicator(classes, predicted)
        exact = int(sum(set(t) == set(p) for t, p in zip(truth, predicted, strict=True)))
        low, high = wilson_interval(exact, n)
        return {
            "accuracy": exact / n,  # exact match of the whole label set
            "accuracy_interval": [low, high],
            "f1_micro": float(f1_score(Y_true, Y_pred, average="micro", zero_division=0)),
            "f1_macro": float(f1_score(Y_true, Y_pred, average="macro", zero_division=0)),
            "test_scored": n,
        }
    correct = int(round(accuracy_score(truth, predicted) * n))
    low, high = wilson_interval(correct, n)
    present = sorted(set(truth) | set(predicted), key=classes.index)
    per_class = f1_score(truth, predicted, labels=present, average=None, zero_division=0)
    return {
        "accuracy": correct / n,
        "accuracy_interval": [low, high],
        "f1_macro": float(np.mean(per_class)) if len(per_class) else 0.0,
        "f1_per_class": {c: float(f) for c, f in zip(present, per_class, strict=True)},
        "test_scored": n,
    }


def _indicator(classes: list[str], label_sets: list) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(label_sets), len(classes)), dtype=np.int8)
    for row, labels in enumerate(label_sets):
        for label in labels:
            out[row, index[label]] = 1
    return out
