"""A team's own embeddings (`annotations.ItemVector`) as the learner's features.

Three feature sets: the built-in ones (`curation.featurizers`), the vectors alone, or both side
by side. Vectors are scaled to unit length (only their direction counts, as in cosine
similarity) times `VECTOR_SCALE`, so that their values are of the order the learner's
regularisation (C = 1) suits; the built-in block is left as the built-in learner sees it. An
item without a vector gets zeros in the vector block: it is still labelled and ranked, on its
built-in features or not at all.

Which set a project trains on is measured, not assumed (`curation.feature_choice`): `both`
until there are labels enough to compare them by cross-validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from annotations.models import ItemVector, Project
from curation.featurizers import Featurizer, featurizer_for
from curation.models import ProjectTraining

__all__ = [
    "BOTH",
    "BUILTIN",
    "FEATURE_SETS",
    "VECTORS",
    "CombinedFeaturizer",
    "VectorFeaturizer",
    "effective_feature_set",
    "featurizer_named",
    "project_feature_set",
    "project_featurizer",
    "vector_matrix",
    "vectors_item_features",
]

BUILTIN = "builtin"
VECTORS = "vectors"
BOTH = "both"
FEATURE_SETS = (BUILTIN, VECTORS, BOTH)
VECTOR_SUFFIX = "item-vectors"
#: Unit vectors underfit with C = 1 (all values ~1/sqrt(dim)): on digits (PCA to 32) a logistic
#: regression on unit vectors reached 50% at 30 labels, 67% at 4x; on the tweets (LSA to 100)
#: 3-4x was as good as any scale, 10x worse at 150 labels.
VECTOR_SCALE = 4.0


class VectorFeaturizer:
    """The items' stored vectors, unit length times VECTOR_SCALE. Its rows come from the
    database (`vectors_item_features`), not from content: `transform` takes the stored bytes."""

    name = VECTOR_SUFFIX
    version = 1

    def __init__(self, dim: int) -> None:
        self.n_features = int(dim)

    def transform(self, batch: Sequence[bytes | None]) -> np.ndarray:
        return vector_rows(batch, self.n_features) * np.float32(VECTOR_SCALE)


class CombinedFeaturizer:
    """The built-in features beside the vectors (unit length, times VECTOR_SCALE)."""

    version = 1

    def __init__(self, base: Featurizer, dim: int) -> None:
        self.base = base
        self.dim = int(dim)
        self.name = f"{base.name}+{VECTOR_SUFFIX}"
        self.n_features = base.n_features + self.dim

    def combine(self, base_rows: Any, vectors: np.ndarray) -> Any:
        """The built-in rows beside the (unit) vectors times VECTOR_SCALE."""
        scaled = vectors * np.float32(VECTOR_SCALE)
        if sp.issparse(base_rows):
            return sp.hstack([base_rows, sp.csr_matrix(scaled)], format="csr", dtype=np.float32)
        return np.hstack([np.asarray(base_rows, dtype=np.float32), scaled])

    def transform(self, batch: Sequence[tuple[Any, bytes | None]]) -> Any:
        contents = [content for content, _ in batch]
        vectors = vector_rows([v for _, v in batch], self.dim)
        return self.combine(self.base.transform(contents), vectors)


def vector_rows(blobs: Sequence[bytes | memoryview | None], dim: int) -> np.ndarray:
    """Unit-length float32 rows from stored vectors; zeros for a missing or misfit one."""
    out = np.zeros((len(blobs), dim), dtype=np.float32)
    for index, blob in enumerate(blobs):
        if blob is not None and len(blob) == 4 * dim:
            out[index] = np.frombuffer(bytes(blob), dtype="<f4")
    return normalize(out, copy=False)


def vector_matrix(item_ids: Sequence[int], dim: int) -> np.ndarray:
    """The unit-length vectors of `item_ids`, in order (zeros where an item has none)."""
    stored: dict[int, Any] = {}
    for start in range(0, len(item_ids), 5000):
        chunk = list(item_ids[start : start + 5000])
        stored.update(ItemVector.objects.filter(item_id__in=chunk).values_list("item", "values"))
    return vector_rows([stored.get(i) for i in item_ids], dim)


def effective_feature_set(project: Project, chosen: str | None) -> str:
    """The set a project trains on: built-in without vectors; else the measured choice, `both`
    until there is one."""
    if project.vector_dim is None:
        return BUILTIN
    return chosen if chosen in FEATURE_SETS else BOTH


def project_feature_set(project: Project) -> str:
    """The feature set `project` trains on now (one small query when it has vectors)."""
    if project.vector_dim is None:
        return BUILTIN
    chosen = (
        ProjectTraining.objects.filter(project=project)
        .values_list("feature_set", flat=True)
        .first()
    )
    return effective_feature_set(project, chosen)


def project_featurizer(project: Project, feature_set: str) -> Featurizer:
    base = featurizer_for(project.item_kind)
    if feature_set == BUILTIN or project.vector_dim is None:
        return base
    if feature_set == VECTORS:
        return VectorFeaturizer(project.vector_dim)
    return CombinedFeaturizer(base, project.vector_dim)


def featurizer_named(project: Project, name: str) -> Featurizer:
    """The featurizer a model version was trained with, from its recorded name."""
    if name == VECTOR_SUFFIX:
        return project_featurizer(project, VECTORS)
    if name.endswith(f"+{VECTOR_SUFFIX}"):
        return project_featurizer(project, BOTH)
    return featurizer_for(project.item_kind)


def vectors_item_features(
    project: Project, featurizer: Featurizer, item_ids: Sequence[int], base_rows: Any
) -> tuple[Any, list[int]]:
    """(rows, kept ids) for a vector featurizer: `base_rows(ids)` gives the built-in rows of
    the combined set (and which items exist)."""
    if isinstance(featurizer, CombinedFeaturizer):
        X, kept = base_rows(featurizer.base, item_ids)
        return featurizer.combine(X, vector_matrix(kept, featurizer.dim)), kept
    existing: set[int] = set()
    for start in range(0, len(item_ids), 5000):
        chunk = list(item_ids[start : start + 5000])
        existing.update(project.items.filter(pk__in=chunk).values_list("id", flat=True))
    kept = [i for i in item_ids if i in existing]
    return vector_matrix(kept, featurizer.n_features) * np.float32(VECTOR_SCALE), kept
