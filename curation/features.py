"""Feature rows for items, whatever their kind: the one place the trainer gets features from.

Text is hashed on the fly (stateless and fast). Image features are read from the item's file and
decoded with Pillow; an unreadable image is logged and left out rather than stopping training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from annotations.models import Item, Project
from curation.featurizers import Featurizer

logger = logging.getLogger(__name__)

__all__ = ["item_features"]

#: Items read from the database per batch, to bound memory for images and large label sets.
CHUNK = 2000


def item_features(
    project: Project, featurizer: Featurizer, item_ids: Sequence[int]
) -> tuple[Any, list[int]]:
    """(rows, kept ids) for `item_ids`, in their order; ids of missing items are left out."""
    blocks, kept = [], []
    for start in range(0, len(item_ids), CHUNK):
        chunk = list(item_ids[start : start + CHUNK])
        if project.item_kind == Project.ItemKind.IMAGE:
            X, ok = _image_rows(featurizer, project, chunk)
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


def _image_rows(
    featurizer: Featurizer, project: Project, chunk: list[int]
) -> tuple[np.ndarray, list[int]]:
    by_id = {i.pk: i for i in Item.objects.filter(pk__in=chunk).only("id", "image")}
    rows, kept = [], []
    for item_id in chunk:
        item = by_id.get(item_id)
        if item is None:
            continue
        try:
            with item.image.open("rb") as handle:
                rows.append(featurizer.transform([handle.read()]))
        except (OSError, ValueError) as exc:
            logger.warning("item %s: no features: %s", item_id, exc)
            continue
        kept.append(item_id)
    if not rows:
        return np.zeros((0, featurizer.n_features), dtype=np.float32), []
    return np.vstack(rows), kept
