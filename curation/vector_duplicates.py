"""Near duplicates by a team's own embeddings: pairs of items whose vectors have a cosine
similarity of `VECTOR_THRESHOLD` or more. Pure functions over arrays (`curation.duplicates`
feeds them from the database, a chunk at a time).

Candidates come from random-projection LSH (SimHash, Charikar 2002): each of `TABLES` tables
hashes a vector to the signs of its dot products with `BITS` random hyperplanes, and two
vectors at angle θ agree on each bit with probability 1 − θ/π, so near twins share a bucket
in some table with high probability (cosine 0.97: 0.955 per bit, 0.48 per table, > 0.9999 over
16 tables) while unrelated items rarely do. Only the signatures are held for every item (two
bytes per table: 32 MB at 1M items), never the vectors; the candidates are then verified on
their actual cosine similarity, reading only the vectors of the items involved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from curation.near_duplicates import Pair

__all__ = [
    "VECTOR_THRESHOLD",
    "candidate_pairs",
    "pairs_verified",
    "random_planes",
    "signatures",
]

#: Pairs at or above this cosine similarity of their vectors are near duplicates.
VECTOR_THRESHOLD = 0.97
TABLES = 16
BITS = 16
#: A bucket with more items than this (thousands of copies of one thing) proposes pairs with
#: its first members only, not every pair.
BUCKET_MAX = 200


def random_planes(dim: int, *, seed: int = 0) -> np.ndarray:
    """(dim, TABLES × BITS) random Gaussian hyperplanes; fixed by the seed."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((dim, TABLES * BITS)).astype(np.float32)


def signatures(vectors: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """(n, TABLES) uint16 bucket keys of `vectors` (one row per item, any scale)."""
    bits = (np.asarray(vectors, dtype=np.float32) @ planes) > 0
    bits = bits.reshape(len(bits), TABLES, BITS)
    weights = (1 << np.arange(BITS, dtype=np.uint32)).astype(np.uint32)
    return (bits.astype(np.uint32) * weights).sum(axis=2).astype(np.uint16)


def candidate_pairs(keys: np.ndarray) -> set[tuple[int, int]]:
    """Index pairs (smaller first) that share a bucket in at least one table. An item without
    a vector must not be passed (its zero vector hashes to one bucket with every other)."""
    found: set[tuple[int, int]] = set()
    for table in range(keys.shape[1]):
        column = keys[:, table]
        order = np.argsort(column, kind="stable")
        ordered = column[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends, strict=True):
            if end - start < 2:
                continue
            members = np.sort(order[start:end]).tolist()
            if len(members) > BUCKET_MAX:  # its first member against the rest
                found.update((members[0], b) for b in members[1:])
                continue
            for i, a in enumerate(members[:-1]):
                found.update((a, b) for b in members[i + 1 :])
    return found


def pairs_verified(
    candidates: Iterable[tuple[int, int]],
    vectors: Mapping[int, np.ndarray],
    *,
    threshold: float = VECTOR_THRESHOLD,
) -> list[Pair]:
    """The candidates whose unit vectors (`vectors[index]`) have a cosine of `threshold` or
    more, with it as their similarity."""
    pairs: list[Pair] = []
    for a, b in sorted(candidates):
        similarity = float(np.dot(vectors[a], vectors[b]))
        if similarity >= threshold:
            pairs.append((a, b, min(similarity, 1.0)))
    return pairs
