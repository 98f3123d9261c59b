"""The outliers analysis (kind "outliers", run by a training worker): how far each item lies
from the rest of the project in feature space, and its nearest items ("more like this").

Representation: the items' vectors when the project has them (a team's own embeddings,
`annotations.ItemVector`: cosine on them, reduced only past `VECTOR_COMPONENTS` values), else the
project's own features (hashed word and character n-grams for text, the
stored pixel and colour vectors for images) reduced by TruncatedSVD to `COMPONENTS` dimensions
(fitted on a sample of at most `SVD_SAMPLE` items, applied to all in chunks) and scaled to unit
length, so a dot product is the cosine similarity of the reduced vectors.

Score: the mean cosine distance to the item's `K` nearest neighbours (k-nearest-neighbour
distance, scikit-learn `NearestNeighbors`): higher is stranger. An item with near twins scores
about 0; one unlike anything else scores near 1.

Cost: the neighbour search is exact (brute force, chunked) up to `EXACT_MAX` items: about
N² × COMPONENTS multiply-adds, ~20 s of CPU at 100k items. Above that an exact search would
take hours at 1M, so it is approximate, like FAISS's IVF index: the vectors are clustered by
MiniBatchKMeans into about √N cells and each item is compared with the items of its `PROBES`
nearest cells only (~N × PROBES × √N × COMPONENTS, a few minutes at 1M). A neighbour in a
cell not probed is missed, so scores there are slight overestimates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotations.models import Item, Project
from curation.analysis_runs import items_grew
from curation.dataset_models import AnalysisRun, ItemOutlier

#: Neighbours kept per item (the item page's "more like this") and averaged for the score.
K = 10
COMPONENTS = 64
#: Item vectors (a team's embeddings) are used as they are up to this length, else reduced to
#: it: 512 MB of float32 at 1M items.
VECTOR_COMPONENTS = 128
SVD_SAMPLE = 20_000
EXACT_MAX = 150_000
PROBES = 4
#: Automatic runs start once a project has this many items (on request: any with K + 1).
MIN_ITEMS = 200
CHUNK = 2000

Report = Callable[[float, float, str], None]


def is_due(project: Project, last_run: AnalysisRun | None) -> bool:
    """As the duplicates': at MIN_ITEMS items, then on the project's growth share."""
    return items_grew(project, last_run, MIN_ITEMS)


def run(project: Project, run: AnalysisRun, report: Report) -> dict[str, Any]:
    """Score every item and store its neighbours, replacing the last run's rows."""
    ids = list(Item.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    report(0, 1, "Reading features")
    vectors, ids = reduced_vectors(project, ids, report)
    if len(ids) < 2:
        with transaction.atomic():
            ItemOutlier.objects.filter(project=project).delete()
        return {"basis": len(ids), "summary": "Too few items to compare", "items": len(ids)}
    report(0, len(ids), "Finding neighbours")
    scores, neighbours, similarities, exact = nearest(vectors, k=K, report=report)
    now = timezone.now()
    with transaction.atomic():
        ItemOutlier.objects.filter(project=project).delete()
        ItemOutlier.objects.bulk_create(
            (
                ItemOutlier(
                    item_id=pk,
                    project=project,
                    score=round(float(scores[row]), 5),
                    neighbours=[
                        [ids[int(other)], round(float(similarity), 4)]
                        for other, similarity in zip(
                            neighbours[row], similarities[row], strict=True
                        )
                        if other >= 0
                    ],
                    run=run,
                    updated_at=now,
                )
                for row, pk in enumerate(ids)
            ),
            batch_size=2000,
        )
    top = int(np.argmax(scores))
    return {
        "basis": len(ids),
        "summary": f"{len(ids):,} items scored; the strangest scores {scores[top]:.2f}",
        "items": len(ids),
        "exact": exact,
        "max_score": round(float(scores[top]), 4),
    }


def reduced_vectors(
    project: Project, ids: list[int], report: Report | None = None
) -> tuple[np.ndarray, list[int]]:
    """Unit-length COMPONENTS-dimensional vectors of the items (those whose features could be
    read), and their ids."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.preprocessing import normalize

    from curation.features import item_features
    from curation.featurizers import featurizer_for
    from curation.vector_features import VECTORS, project_featurizer

    if project.vector_dim is not None:
        # A team's embeddings: cosine on them, reduced only when longer than VECTOR_COMPONENTS.
        featurizer, most = project_featurizer(project, VECTORS), VECTOR_COMPONENTS
    else:
        featurizer, most = featurizer_for(project.item_kind), COMPONENTS
    svd = None
    components = featurizer.n_features
    if featurizer.n_features > most:
        rng = np.random.default_rng(0)
        sample = sorted(rng.choice(ids, size=min(SVD_SAMPLE, len(ids)), replace=False).tolist())
        X, _ = item_features(project, featurizer, sample)
        components = max(1, min(most, X.shape[0] - 1, X.shape[1] - 1))
        svd = TruncatedSVD(n_components=components, random_state=0).fit(X)
    blocks, kept = [], []
    for start in range(0, len(ids), CHUNK):
        X, ok = item_features(project, featurizer, ids[start : start + CHUNK])
        if ok:
            blocks.append((X if svd is None else svd.transform(X)).astype(np.float32))
            kept.extend(ok)
        if report is not None:
            report(start + CHUNK, len(ids), "Reading features")
    if not blocks:
        return np.zeros((0, components), dtype=np.float32), []
    return normalize(np.vstack(blocks)), kept


def nearest(
    vectors: np.ndarray, *, k: int = K, report: Report | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(score, neighbour indexes, their cosine similarities, whether exact) for unit vectors;
    neighbour index -1 pads an item with fewer than k others."""
    n = len(vectors)
    k = min(k, n - 1)
    if n <= EXACT_MAX:
        indexes, similarities = _exact(vectors, k, report)
        exact = True
    else:
        indexes, similarities = _probed(vectors, k, report)
        exact = False
    distances = np.where(indexes >= 0, 1.0 - similarities, 1.0)
    return distances.mean(axis=1), indexes, similarities, exact


def _exact(vectors: np.ndarray, k: int, report: Report | None):
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="euclidean")
    index.fit(vectors)
    found_d, found_i = [], []
    for start in range(0, len(vectors), CHUNK):
        d, i = index.kneighbors(vectors[start : start + CHUNK])
        found_d.append(d)
        found_i.append(i)
        if report is not None:
            report(start + CHUNK, len(vectors), "Finding neighbours")
    return _without_self(np.vstack(found_i), np.vstack(found_d), k)


def _without_self(indexes: np.ndarray, distances: np.ndarray, k: int):
    """Drop each row's own index (or, among exact twins, its last neighbour) and turn
    Euclidean distances of unit vectors into cosine similarities."""
    rows = np.arange(len(indexes))[:, None]
    is_self = indexes == rows
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), indexes.shape[1] - 1)
    keep = np.ones_like(indexes, dtype=bool)
    keep[np.arange(len(indexes)), drop] = False
    indexes = indexes[keep].reshape(len(indexes), -1)[:, :k]
    distances = distances[keep].reshape(len(distances), -1)[:, :k]
    similarities = np.clip(1.0 - distances**2 / 2.0, -1.0, 1.0)
    return indexes, similarities


def _probed(vectors: np.ndarray, k: int, report: Report | None):
    """Approximate neighbours: each item against the items of its PROBES nearest k-means cells."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(vectors)
    cells = max(2, int(np.sqrt(n)))
    kmeans = MiniBatchKMeans(n_clusters=cells, random_state=0, n_init=1, batch_size=4096)
    assignment = kmeans.fit_predict(vectors)
    centres = kmeans.cluster_centers_.astype(np.float32)
    members = [np.flatnonzero(assignment == c) for c in range(cells)]
    indexes = np.full((n, k), -1, dtype=np.int64)
    similarities = np.zeros((n, k), dtype=np.float32)
    for done, cell in enumerate(range(cells)):
        rows = members[cell]
        if not len(rows):
            continue
        probes = np.argsort(-(centres @ centres[cell]))[:PROBES]
        pool = np.concatenate([members[c] for c in probes])
        sims = vectors[rows] @ vectors[pool].T
        sims[pool[None, :] == rows[:, None]] = -np.inf  # not itself
        take = min(k, len(pool) - 1)
        if take <= 0:
            continue
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1)
        indexes[rows, :take] = pool[np.take_along_axis(top, order, axis=1)]
        similarities[rows, :take] = np.take_along_axis(top_sims, order, axis=1)
        if report is not None:
            report(done + 1, cells, "Finding neighbours (approximate)")
    return indexes, similarities
