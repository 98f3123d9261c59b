"""Validate and store what a team's own models say about items: predictions and vectors.

Imports (every format that carries them) and the API call the same functions, so the rules are
the same wherever they come from: a prediction names known, active classes and probabilities in
[0, 1]; a vector is a list of finite numbers whose length is fixed per project by the first one
stored. `parse_*` raise `PreAnnotationError` with a message that says what is wrong; callers add
where (file and line, or the request's index).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from annotations.models import ClassNames, ItemVector, PreAnnotation, Project
from curation.models import ProjectTraining

__all__ = [
    "MODEL_NAME_MAX",
    "PreAnnotationError",
    "PredictionIn",
    "parse_prediction",
    "parse_vector",
    "predictions_save",
    "vector_values",
    "vectors_save",
]

MODEL_NAME_MAX = PreAnnotation._meta.get_field("model_name").max_length
#: The longest embedding accepted (text embedders give 384–4,096 values).
VECTOR_DIM_MAX = 8192
_BATCH = 2000


class PreAnnotationError(ValueError):
    """A prediction or vector that cannot be stored; the message says why."""


@dataclass(frozen=True)
class PredictionIn:
    model_name: str
    labels: tuple[str, ...]
    scores: dict[str, float] | None
    score: float | None


def _probability(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PreAnnotationError(f"{what} must be a number between 0 and 1, not {value!r}")
    number = float(value)
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise PreAnnotationError(f"{what} must be between 0 and 1, not {value!r}")
    return number


def parse_prediction(
    raw: Any,
    *,
    classes: ClassNames,
    multi_label: bool,
    default_model: str | None = None,
) -> PredictionIn:
    """A prediction from its JSON form:

    `{"model": "bert-v2", "label": "pos", "score": 0.93}`, or `"labels": ["a", "b"]` (multi-label),
    and/or `"scores": {"pos": 0.93, "neg": 0.07}`. With scores but no labels, the labels are the
    top class (single-label) or the classes at 0.5 or more (multi-label)."""
    if not isinstance(raw, dict):
        raise PreAnnotationError(f"a prediction must be an object, not {type(raw).__name__}")
    unknown = set(raw) - {"model", "model_name", "label", "labels", "scores", "score"}
    if unknown:
        raise PreAnnotationError(f"unknown prediction field(s): {', '.join(sorted(unknown))}")
    model = raw.get("model", raw.get("model_name", default_model))
    if not isinstance(model, str) or not model.strip():
        raise PreAnnotationError('a prediction needs a "model" name')
    model = model.strip()
    if len(model) > MODEL_NAME_MAX:
        raise PreAnnotationError(f"the model name is longer than {MODEL_NAME_MAX} characters")
    active = set(classes.offered)

    def known(name: Any, what: str) -> str:
        if not isinstance(name, str) or name not in active:
            known_names = ", ".join(classes.offered)
            raise PreAnnotationError(f"{what} {name!r} is not a label class ({known_names})")
        return name

    scores: dict[str, float] | None = None
    if raw.get("scores") is not None:
        if not isinstance(raw["scores"], dict) or not raw["scores"]:
            raise PreAnnotationError('"scores" must be an object of class name to probability')
        scores = {
            known(name, "scored class"): _probability(p, f"the score of {name!r}")
            for name, p in raw["scores"].items()
        }
    if "label" in raw and "labels" in raw:
        raise PreAnnotationError('give "label" or "labels", not both')
    if "label" in raw:
        labels: tuple[str, ...] = (known(raw["label"], "predicted label"),)
    elif "labels" in raw:
        if not isinstance(raw["labels"], list):
            raise PreAnnotationError('"labels" must be a list of class names')
        labels = tuple(dict.fromkeys(known(n, "predicted label") for n in raw["labels"]))
    elif scores:
        if multi_label:
            labels = tuple(n for n, p in scores.items() if p >= 0.5)
        else:
            labels = (max(scores, key=scores.__getitem__),)
    else:
        raise PreAnnotationError('a prediction needs "label", "labels" or "scores"')
    if not multi_label and len(labels) != 1:
        raise PreAnnotationError(
            f"a single-label project takes one predicted label, not {len(labels)}"
        )
    score = None if raw.get("score") is None else _probability(raw["score"], '"score"')
    return PredictionIn(model, labels, scores, score)


def parse_vector(raw: Any, *, dim: int | None = None) -> bytes:
    """A vector (a JSON list of numbers) as little-endian float32 bytes; `dim` is the project's
    length once fixed."""
    if not isinstance(raw, list) or not raw:
        raise PreAnnotationError("a vector must be a non-empty list of numbers")
    if len(raw) > VECTOR_DIM_MAX:
        raise PreAnnotationError(
            f"a vector has at most {VECTOR_DIM_MAX:,} values, not {len(raw):,}"
        )
    if dim is not None and len(raw) != dim:
        raise PreAnnotationError(
            f"this project's vectors have {dim} values; this one has {len(raw)}"
        )
    for i, value in enumerate(raw):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PreAnnotationError(f"vector value {i} is not a number: {value!r}")
        if not math.isfinite(value) or abs(value) > 3.0e38:
            raise PreAnnotationError(f"vector value {i} is not a finite float32: {value!r}")
    values = array("f", raw)
    if sys.byteorder != "little":
        values.byteswap()
    return values.tobytes()


def vector_values(data: bytes | memoryview) -> list[float]:
    """The floats of a stored vector."""
    values = array("f")
    values.frombytes(bytes(data))
    if sys.byteorder != "little":
        values.byteswap()
    return values.tolist()


def predictions_save(project: Project, rows: Iterable[tuple[int, PredictionIn]]) -> int:
    """Store predictions by item id, replacing each item's earlier prediction from the same
    model. The item ids must belong to `project` (callers resolved them within it).

    Makes sure the project has its training row: the annotate page asks that row whether any
    predictions exist (`curation.suggest`), so a project without one has none, at no query."""
    ProjectTraining.objects.get_or_create(project=project)
    now = timezone.now()
    objs = [
        PreAnnotation(
            project_id=project.pk,
            item_id=item_id,
            model_name=p.model_name,
            labels=list(p.labels),
            scores=p.scores,
            score=p.score,
            created_at=now,
            updated_at=now,
        )
        for item_id, p in rows
    ]
    for start in range(0, len(objs), _BATCH):
        PreAnnotation.objects.bulk_create(
            objs[start : start + _BATCH],
            update_conflicts=True,
            unique_fields=["item", "model_name"],
            update_fields=["labels", "scores", "score", "updated_at"],
        )
    return len(objs)


def vectors_save(project: Project, rows: Sequence[tuple[int, bytes]]) -> int:
    """Store vectors (from `parse_vector`) by item id, replacing earlier ones. The first vectors
    stored fix the project's dimension; every vector must have it. Locks the project row so
    two first imports cannot fix two dimensions."""
    if not rows:
        return 0
    lengths = {len(values) // 4 for _, values in rows}
    if len(lengths) != 1:
        raise PreAnnotationError(
            f"vectors of one project share one length; these have {sorted(lengths)}"
        )
    (dim,) = lengths
    with transaction.atomic():
        locked = Project.objects.select_for_update().only("vector_dim").get(pk=project.pk)
        if locked.vector_dim is None:
            Project.objects.filter(pk=project.pk).update(vector_dim=dim)
        elif locked.vector_dim != dim:
            raise PreAnnotationError(
                f"this project's vectors have {locked.vector_dim} values; these have {dim}"
            )
        project.vector_dim = dim
        now = timezone.now()
        objs = [
            ItemVector(item_id=item_id, project_id=project.pk, values=values, updated_at=now)
            for item_id, values in rows
        ]
        for start in range(0, len(objs), _BATCH):
            ItemVector.objects.bulk_create(
                objs[start : start + _BATCH],
                update_conflicts=True,
                unique_fields=["item"],
                update_fields=["values", "updated_at"],
            )
    return len(objs)
