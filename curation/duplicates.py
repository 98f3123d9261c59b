"""The duplicates analysis (kind "duplicates", run by a training worker): groups of items that
are the same (exact: equal `Item.content_hash`) or nearly the same (text: MinHash LSH on
character 5-grams, verified by Jaccard; images: perceptual hashes within a few bits, verified
by their thumbnails' correlation; see
`curation.near_duplicates`; items with a vector, a team's embedding: cosine similarity, see
`curation.vector_duplicates`). Each run replaces the previous run's groups in one transaction,
so the pages never see half a result.

A group is *conflicting* when its members' gold labels differ: the same content labelled two
ways, which `curation.duplicate_review.duplicates_to_review` sends to review together.

Cost: the exact groups are one GROUP BY on an index. Near duplicates of text cost about
0.25 ms of CPU per item (signatures and LSH buckets; measured in `benchmarks/duplicates.py`),
so about 25 s at 100k items and 4–5 min at 1M, in the worker, never in a request; texts are
held in memory for the run, each cut to its first `MAX_CHARS` characters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from django.db import transaction

from annotations.content_hash import bytes_hash, normalise_text, text_hash
from annotations.models import Item, ItemVector, Project
from curation.analysis_runs import items_grew
from curation.dataset_models import AnalysisRun, DuplicateGroup, ItemDuplicate
from curation.duplicate_groups import gold_label_sets, labels_conflict
from curation.near_duplicates import (
    groups_of,
    image_near_duplicates,
    image_pairs_verified,
    text_near_duplicates,
)
from curation.vector_duplicates import (
    TABLES,
    candidate_pairs,
    pairs_verified,
    random_planes,
    signatures,
)

#: Automatic runs start once a project has this many items (on request: any project).
MIN_ITEMS = 200
#: Near duplicates of long texts are judged on their beginning.
MAX_CHARS = 5000
#: Rows read from the database at once.
CHUNK = 2000

Report = Callable[[float, float, str], None]


def is_due(project: Project, last_run: AnalysisRun | None) -> bool:
    """Due once a project has MIN_ITEMS items, then again when they grew by the project's
    `analysis_growth` share since the last run."""
    return items_grew(project, last_run, MIN_ITEMS)


def run(project: Project, run: AnalysisRun, report: Report) -> dict[str, Any]:
    """Find the project's duplicate groups and store them in place of the last run's."""
    report(0, 1, "Hashing items")
    filled = fill_content_hashes(project)
    ids, hashes = _ids_and_hashes(project)
    # One representative per exact group (its lowest id) goes to the near-duplicate search.
    first_of: dict[int, int] = {}
    exact: dict[int, list[int]] = {}
    for item_id, content_hash in zip(ids, hashes, strict=True):
        if content_hash is None:
            exact[item_id] = [item_id]
            continue
        representative = first_of.setdefault(content_hash, item_id)
        exact.setdefault(representative, []).append(item_id)
    representatives = sorted(exact)

    def near_progress(done: int, total: int) -> None:
        report(done, total, f"Near duplicates: {done:,} of {total:,} items")

    # Items with a vector (a team's embeddings) are compared by cosine; the rest by content.
    with_vectors = _with_vectors(project, representatives)
    by_content = [i for i, pk in enumerate(representatives) if pk not in with_vectors]
    others = [representatives[i] for i in by_content]
    if not others:
        content_pairs = []
    elif project.item_kind == Project.ItemKind.IMAGE:
        content_pairs = _image_pairs(project, others)
    else:
        content_pairs = text_near_duplicates(
            _normalised_texts(project, others), progress=near_progress
        )
    pairs = [(by_content[a], by_content[b], s) for a, b, s in content_pairs]
    if with_vectors:
        vectored = [i for i, pk in enumerate(representatives) if pk in with_vectors]
        found = vector_pairs(project, [representatives[i] for i in vectored])
        pairs += [(vectored[a], vectored[b], s) for a, b, s in found]
    groups = _merged_groups(representatives, exact, pairs)
    report(1, 1, "Saving groups")
    counts = _store(project, run, groups)
    exact_groups = counts["exact_groups"]
    near_groups = counts["near_groups"]
    return {
        "basis": len(ids),
        "summary": (
            f"{exact_groups:,} exact and {near_groups:,} near duplicate groups "
            f"({counts['items_in_groups']:,} items, {counts['conflicting']:,} with different "
            "gold labels)"
        ),
        "items": len(ids),
        "hashed": filled,
        **counts,
    }


def _with_vectors(project: Project, ids: list[int]) -> set[int]:
    if project.vector_dim is None:
        return set()
    found: set[int] = set()
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found.update(ItemVector.objects.filter(item_id__in=chunk).values_list("item", flat=True))
    return found


def vector_pairs(project: Project, ids: list[int]) -> list:
    """Near-duplicate pairs (indexes into `ids`, items with a vector) by the cosine of their
    vectors (`curation.vector_duplicates`): the signatures of all, the vectors of the few
    candidates, a chunk at a time."""
    from curation.vector_features import vector_matrix

    dim = project.vector_dim
    planes = random_planes(dim)
    keys = np.zeros((len(ids), TABLES), dtype=np.uint16)
    for start in range(0, len(ids), CHUNK):
        keys[start : start + CHUNK] = signatures(
            vector_matrix(ids[start : start + CHUNK], dim), planes
        )
    candidates = candidate_pairs(keys)
    involved = sorted({index for pair in candidates for index in pair})
    vectors: dict[int, np.ndarray] = {}
    for start in range(0, len(involved), CHUNK):
        chunk = involved[start : start + CHUNK]
        X = vector_matrix([ids[index] for index in chunk], dim)
        vectors.update(zip(chunk, X, strict=True))
    return pairs_verified(candidates, vectors)


def fill_content_hashes(project: Project) -> int:
    """Hash the items that have no `content_hash` (added before it existed, or not by an
    import); returns how many."""
    filled = 0
    while True:
        rows = list(
            Item.objects.filter(project=project, content_hash__isnull=True)
            .order_by("pk")
            .values_list("pk", "text", "image")[:CHUNK]
        )
        if not rows:
            return filled
        updates = []
        for pk, text, image in rows:
            if image:
                data = _read_image(image)
                value = bytes_hash(data) if data is not None else bytes_hash(f"#{pk}".encode())
            else:
                value = text_hash(text)
            updates.append(Item(pk=pk, content_hash=value))
        Item.objects.bulk_update(updates, ["content_hash"], batch_size=1000)
        filled += len(updates)


def _read_image(name: str) -> bytes | None:
    storage = Item._meta.get_field("image").storage
    try:
        with storage.open(name, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _ids_and_hashes(project: Project) -> tuple[list[int], list[int | None]]:
    rows = Item.objects.filter(project=project).order_by("pk").values_list("pk", "content_hash")
    ids: list[int] = []
    hashes: list[int | None] = []
    for pk, content_hash in rows.iterator(chunk_size=CHUNK):
        ids.append(pk)
        hashes.append(content_hash)
    return ids, hashes


def _normalised_texts(project: Project, ids: list[int]) -> list[str]:
    """The normalised texts of `ids`, in their order."""
    texts: list[str] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        found = dict(Item.objects.filter(pk__in=chunk).values_list("pk", "text"))
        texts.extend(normalise_text(found.get(pk, "")[:MAX_CHARS]) for pk in chunk)
    return texts


def _image_pairs(project: Project, ids: list[int]) -> list:
    """Near-duplicate pairs (indexes into `ids`) of the images of `ids`: proposed by their
    perceptual hashes, kept when their thumbnails correlate (`image_pairs_verified`). The
    thumbnails of the few images in a proposed pair are read a second time rather than all
    held in memory."""
    hashes = np.zeros(len(ids), dtype=np.uint64)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        for offset, gray in enumerate(_thumbnails(project, chunk)):
            hashes[start + offset] = _own_hash(chunk[offset]) if gray is None else _phash(gray)
    proposed = image_near_duplicates(hashes)
    involved = sorted({index for a, b, _ in proposed for index in (a, b)})
    thumbnails: dict[int, np.ndarray | None] = {}
    for start in range(0, len(involved), CHUNK):
        chunk = involved[start : start + CHUNK]
        grays = _thumbnails(project, [ids[index] for index in chunk])
        thumbnails.update(zip(chunk, grays, strict=True))
    return image_pairs_verified(proposed, thumbnails)


def _thumbnails(project: Project, ids: list[int]) -> list[np.ndarray | None]:
    """The 16×16 grayscale thumbnail of each image of `ids` (at most CHUNK), in their order;
    None for an image that cannot be read.

    With the default featurizer the thumbnail is the first part of each item's stored feature
    vector, so no image is decoded; another featurizer's items are thumbnailed from their files
    the same way (`image_features`)."""
    from curation.features import item_features
    from curation.featurizers import (
        THUMBNAIL_SIDE,
        ImagePixelFeaturizer,
        featurizer_for,
        image_features,
    )

    side = THUMBNAIL_SIDE
    featurizer = featurizer_for(Project.ItemKind.IMAGE)
    if isinstance(featurizer, ImagePixelFeaturizer):
        X, kept = item_features(project, featurizer, ids)
        inks = dict(zip(kept, X, strict=True))
    else:
        images = dict(Item.objects.filter(pk__in=ids).values_list("pk", "image"))
        inks = {}
        for pk in ids:
            data = _read_image(images.get(pk, ""))
            try:
                inks[pk] = image_features(data) if data else None
            except ValueError:
                inks[pk] = None
    grays: list[np.ndarray | None] = []
    for pk in ids:
        vector = inks.get(pk)
        if vector is None:
            grays.append(None)
            continue
        ink = vector[: side * side].reshape(side, side)
        grays.append(((1.0 - ink) * 255).round().astype(np.uint8))
    return grays


def _own_hash(pk: int) -> np.uint64:
    """A perceptual hash for an image that cannot be read: its own, near nothing else."""
    return np.uint64(bytes_hash(f"#{pk}".encode()) & (2**64 - 1))


def _phash(gray: np.ndarray) -> int:
    import imagehash
    from PIL import Image

    # highfreq_factor=2: the DCT runs on the 16×16 thumbnail as it is, keeping its 8×8 lowest
    # frequencies, rather than on an upscaled 32×32 copy.
    value = imagehash.phash(Image.fromarray(gray, mode="L"), hash_size=8, highfreq_factor=2)
    return int(str(value), 16)


def _merged_groups(
    representatives: list[int], exact: dict[int, list[int]], pairs: list
) -> list[tuple[str, list[int], dict[int, float]]]:
    """(kind, item ids, similarity per item) for every group: near groups join the exact
    groups of the representatives they connect; exact groups no pair touches stay exact."""
    groups = []
    in_near: set[int] = set()
    for indexes, best in groups_of(len(representatives), pairs):
        members: list[int] = []
        similarity: dict[int, float] = {}
        for index in indexes:
            representative = representatives[index]
            in_near.add(representative)
            twins = exact[representative]
            for pk in twins:
                members.append(pk)
                similarity[pk] = 1.0 if len(twins) > 1 else best[index]
        groups.append((DuplicateGroup.Kind.NEAR, sorted(members), similarity))
    for representative, twins in exact.items():
        if len(twins) > 1 and representative not in in_near:
            groups.append((DuplicateGroup.Kind.EXACT, twins, dict.fromkeys(twins, 1.0)))
    return groups


def _store(
    project: Project, run: AnalysisRun, groups: list[tuple[str, list[int], dict[int, float]]]
) -> dict[str, int]:
    """Replace the project's groups with `groups`, marking those whose gold labels differ."""
    in_groups = [pk for _, members, _ in groups for pk in members]
    gold = gold_label_sets(in_groups)
    counts = {"exact_groups": 0, "near_groups": 0, "items_in_groups": 0, "conflicting": 0}
    with transaction.atomic():
        DuplicateGroup.objects.filter(project=project).delete()  # members cascade
        rows = []
        for kind, members, _ in groups:
            conflicting = labels_conflict(members, gold)
            rows.append(
                DuplicateGroup(
                    project=project, kind=kind, size=len(members), conflicting=conflicting, run=run
                )
            )
            counts[f"{kind}_groups"] += 1
            counts["items_in_groups"] += len(members)
            counts["conflicting"] += conflicting
        saved = DuplicateGroup.objects.bulk_create(rows, batch_size=1000)
        ItemDuplicate.objects.bulk_create(_memberships(project, saved, groups), batch_size=2000)
    return counts


def _memberships(
    project: Project,
    saved: list[DuplicateGroup],
    groups: list[tuple[str, list[int], dict[int, float]]],
) -> Iterator[ItemDuplicate]:
    for group, (_, members, similarity) in zip(saved, groups, strict=True):
        for pk in members:
            yield ItemDuplicate(
                item_id=pk, group=group, project=project, similarity=round(similarity[pk], 4)
            )
