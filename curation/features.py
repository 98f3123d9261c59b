"""Feature rows for items, whatever their kind: the one place the trainer gets features from.

Text is hashed on the fly (stateless and cheap; its hashed vector is wider than the text). Image
features are computed once, when the items are imported (`store_image_features`), and stored as
`ItemFeatures` rows; `item_features` reads those, and decodes the file only for an item with no
vector for the current featurizer (imported before vectors were stored, or by an older
featurizer version), storing what it computed. An unreadable image is logged and left out
rather than stopping an import or a training run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import DatabaseError, transaction

from annotations.models import Item, Project
from curation.featurizers import (
    Featurizer,
    deserialize,
    deserialize_batch,
    featurizer_for,
    serialize,
)
from curation.models import ItemFeatures
from curation.vector_features import VECTOR_SUFFIX, vectors_item_features

logger = logging.getLogger(__name__)

__all__ = ["item_features", "store_image_features"]

#: Items read from the database per batch, to bound memory for images and large label sets.
CHUNK = 2000


def item_features(
    project: Project, featurizer: Featurizer, item_ids: Sequence[int]
) -> tuple[Any, list[int]]:
    """(rows, kept ids) for `item_ids`, in their order; ids of missing items are left out."""
    if featurizer.name.endswith(VECTOR_SUFFIX):  # a team's vectors, alone or beside ours
        return vectors_item_features(
            project, featurizer, item_ids, lambda base, ids: item_features(project, base, ids)
        )
    blocks, kept = [], []
    for start in range(0, len(item_ids), CHUNK):
        chunk = list(item_ids[start : start + CHUNK])
        if project.item_kind == Project.ItemKind.IMAGE:
            X, ok = _image_rows(featurizer, chunk)
        else:
            texts = dict(Item.objects.filter(pk__in=chunk).values_list("id", "text"))
            ok = [i for i in chunk if i in texts]
            X = featurizer.transform([texts[i] for i in ok])
        if ok:
            blocks.append(X)
            kept.extend(ok)
    if not blocks:
        return np.zeros((0, featurizer.n_features), dtype=np.float32), []
    if sp.issparse(blocks[0]):
        return sp.vstack(blocks, format="csr"), kept
    return np.vstack(blocks), kept


def store_image_features(items: Sequence[Item], *, contents: Sequence[bytes] | None = None) -> int:
    """Compute and store the image featurizer's vector of each saved image item.

    Called inside the transaction that creates the items, so a failed import stores nothing.
    `contents` are the items' file bytes when the caller has them in hand (an import has just
    read them); otherwise each file is read from storage. An image that cannot be featurized is
    logged and skipped (`item_features` retries it from the file later), and so is a failed
    insert: features are a cache, never a reason to fail an import. Returns how many were
    stored.
    """
    if contents is not None and len(contents) != len(items):
        raise ValueError(f"{len(items)} items but {len(contents)} contents")
    featurizer = featurizer_for(Project.ItemKind.IMAGE)
    pairs = [
        (item, None if contents is None else contents[index])
        for index, item in enumerate(items)
        if item.pk is not None and item.image
    ]
    vectors = _featurize(featurizer, pairs)
    rows = [
        ItemFeatures(
            item_id=item.pk,
            featurizer_name=featurizer.name,
            featurizer_version=featurizer.version,
            vector=serialize(vector),
        )
        for (item, _), vector in zip(pairs, vectors, strict=True)
        if vector is not None
    ]
    if not rows:
        return 0
    try:
        with transaction.atomic():  # a savepoint: a failure here must not doom the import
            ItemFeatures.objects.bulk_create(rows, ignore_conflicts=True)
    except DatabaseError:
        logger.warning("could not store the features of %d images", len(rows), exc_info=True)
        return 0
    return len(rows)


def _featurize(
    featurizer: Featurizer, pairs: list[tuple[Item, bytes | None]]
) -> list[np.ndarray | None]:
    """One vector per (item, its bytes or None to read the file); None where there is none."""
    datas = [_read(item) if data is None else data for item, data in pairs]
    readable = [index for index, data in enumerate(datas) if data is not None]
    out: list[np.ndarray | None] = [None] * len(pairs)
    try:
        # One call for the batch, so a batching backend (an embedding model) can use it.
        X = featurizer.transform([datas[index] for index in readable])
        X = X.toarray() if sp.issparse(X) else X
        for index, row in zip(readable, np.asarray(X, dtype=np.float32), strict=True):
            out[index] = row
    except Exception:  # noqa: BLE001 - Pillow raises many types; find the bad images one by one
        for index in readable:
            out[index] = _featurize_one(featurizer, pairs[index][0], datas[index])
    return out


def _read(item: Item) -> bytes | None:
    try:
        with item.image.open("rb") as handle:
            return handle.read()
    except OSError as exc:
        logger.warning("item %s: no features: cannot read %s: %s", item.pk, item.image, exc)
        return None


def _featurize_one(featurizer: Featurizer, item: Item, data: bytes) -> np.ndarray | None:
    try:
        X = featurizer.transform([data])
        return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)[0]
    except Exception as exc:  # noqa: BLE001 - see _featurize
        logger.warning("item %s: no features: %s", item.pk, exc)
        return None


def _image_rows(featurizer: Featurizer, chunk: list[int]) -> tuple[np.ndarray, list[int]]:
    """Stored vectors where there are any for this featurizer; the rest decoded and stored."""
    stored = dict(
        ItemFeatures.objects.filter(
            item_id__in=chunk,
            featurizer_name=featurizer.name,
            featurizer_version=featurizer.version,
        ).values_list("item_id", "vector")
    )
    ids = list(stored)
    try:
        found = deserialize_batch([stored[i] for i in ids], featurizer.n_features)
        vectors = dict(zip(ids, found, strict=True))
    except ValueError:
        vectors = _readable(featurizer, stored)  # a damaged row is recomputed like a missing one
    missing = [i for i in chunk if i not in vectors]
    if missing:
        vectors.update(_computed_rows(featurizer, missing))
    kept = [i for i in chunk if i in vectors]
    if not kept:
        return np.zeros((0, featurizer.n_features), dtype=np.float32), []
    return np.vstack([vectors[i] for i in kept]), kept


def _readable(featurizer: Featurizer, stored: dict[int, Any]) -> dict[int, np.ndarray]:
    """The stored vectors that decode, by item id; the damaged ones are logged and left out."""
    vectors = {}
    for item_id, blob in stored.items():
        try:
            vectors[item_id] = deserialize(blob, n_features=featurizer.n_features)
        except ValueError as exc:
            logger.warning("item %s: stored features unusable, recomputing: %s", item_id, exc)
    return vectors


def _computed_rows(featurizer: Featurizer, ids: list[int]) -> dict[int, np.ndarray]:
    """Decode the files of `ids` (existing items only) and store the vectors for next time,
    replacing any row left by another featurizer version."""
    items = list(Item.objects.filter(pk__in=ids).only("id", "image"))
    vectors = _featurize(featurizer, [(item, None) for item in items])
    computed = {
        item.pk: vector for item, vector in zip(items, vectors, strict=True) if vector is not None
    }
    rows = [
        ItemFeatures(
            item_id=item_id,
            featurizer_name=featurizer.name,
            featurizer_version=featurizer.version,
            vector=serialize(vector),
        )
        for item_id, vector in computed.items()
    ]
    if rows:
        try:
            with transaction.atomic():  # a savepoint: the caller's transaction carries on
                ItemFeatures.objects.bulk_create(
                    rows,
                    update_conflicts=True,
                    unique_fields=["item"],
                    update_fields=["featurizer_name", "featurizer_version", "vector"],
                )
        except DatabaseError:
            logger.warning("could not store the features of %d images", len(rows), exc_info=True)
    return computed
