"""Finding near duplicates: pure functions over texts and perceptual hashes that return the
similar pairs, and the groups those pairs make. No database here (`curation.duplicates` is the
analysis that feeds and stores them), so they are tested and benchmarked on plain lists.

Text: MinHash signatures of each normalised text's (byte) 5-grams, banded by datasketch's
LSH into candidate pairs, each candidate then verified by the *actual* Jaccard similarity of
the two shingle sets (LSH only proposes). Character 5-grams rather than word shingles because
the edits we are after are small: one changed character costs at most five of a tweet's
~100 shingles, one changed word about as many as its length plus four, so "a few characters
or words" changed keeps the Jaccard well above `TEXT_THRESHOLD` while unrelated texts of the
same topic share only stray 5-grams (stop words and @names) and stay far below it.

Images: 64-bit perceptual hashes (`imagehash.phash`) within `IMAGE_MAX_DISTANCE` bits of each
other propose pairs; candidates come from the pigeonhole principle rather than all pairs: split
into `IMAGE_MAX_DISTANCE + 1` bit blocks, two hashes that differ in at most that many bits agree
exactly on at least one block, so bucketing by each block finds every such pair. Like LSH for
text, the hash only proposes: a pair is kept when the two grayscale thumbnails the hashes were
taken from correlate at `IMAGE_MIN_CORRELATION` or more (`image_pairs_verified`). The hash
alone is too coarse for small, alike images: among scikit-learn's 1,797 handwritten digits,
353 pairs of different people's scans of a digit lie within 6 bits (correlation at most
0.989), while copies with a pixel or two changed, re-encoded or resized by a pixel lie within
2 bits and correlate at 0.9999.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: Characters per shingle.
SHINGLE = 5
#: Pairs at or above this Jaccard similarity of their shingle sets are near duplicates.
TEXT_THRESHOLD = 0.5
#: LSH proposes pairs from a lower estimated similarity, so that a pair just above
#: TEXT_THRESHOLD is almost never missed (its chance of sharing a band is then ~0.99).
LSH_THRESHOLD = 0.35
NUM_PERM = 128
#: A bucket with more texts than this (a template repeated thousands of times) is verified
#: against its first few members only, not pair by pair.
BUCKET_MAX = 200
#: Images whose 64-bit perceptual hashes differ in at most this many bits are near duplicates.
IMAGE_MAX_DISTANCE = 6
#: ... and their thumbnails' Pearson correlation is at least this (invariant to a change of
#: brightness or contrast, which a perceptual hash also ignores).
IMAGE_MIN_CORRELATION = 0.995

Pair = tuple[int, int, float]  # (index, index, similarity), first index smaller

__all__ = [
    "IMAGE_MAX_DISTANCE",
    "IMAGE_MIN_CORRELATION",
    "TEXT_THRESHOLD",
    "Pair",
    "groups_of",
    "image_near_duplicates",
    "image_pairs_verified",
    "shingles",
    "text_near_duplicates",
]


def shingles(texts: Sequence[str], size: int = SHINGLE) -> list[np.ndarray]:
    """Each text's UTF-8 byte `size`-grams, as sorted unique integers (the bytes themselves,
    so no hash collisions; byte rather than character n-grams: the same for ASCII, and a
    changed accented letter costs a shingle or two more). A text shorter than `size` bytes is
    one shingle. Computed for a whole batch in a few array operations: per text in Python
    this was the analysis's largest cost."""
    encoded = [text.encode("utf-8") for text in texts]
    if not encoded:
        return []
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.uint64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    count = np.maximum(lengths - size + 1, 1)  # shingles per text
    owner = np.repeat(np.arange(len(encoded)), count)
    # Position of each shingle in `data`: its text's start plus its offset in the text.
    offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    at = starts[owner] + offsets
    padded = np.concatenate([data, np.zeros(size, dtype=np.uint64)])
    grams = np.zeros(len(at), dtype=np.uint64)
    for k in range(size):
        byte = padded[at + k]
        # A short text's shingle is its bytes padded with zeros, not its neighbour's.
        byte[offsets + k >= lengths[owner]] = 0
        grams = (grams << np.uint64(8)) | byte
    # Sort by (text, shingle) and drop repeats; then split per text.
    order = np.lexsort((grams, owner))
    owner, grams = owner[order], grams[order]
    keep = np.r_[True, (owner[1:] != owner[:-1]) | (grams[1:] != grams[:-1])]
    owner, grams = owner[keep], grams[keep]
    bounds = np.searchsorted(owner, np.arange(1, len(encoded)))
    return np.split(grams, bounds)


def text_near_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = TEXT_THRESHOLD,
    lsh_threshold: float = LSH_THRESHOLD,
    num_perm: int = NUM_PERM,
    progress: Callable[[int, int], None] | None = None,
) -> list[Pair]:
    """The pairs of `texts` (already normalised) whose shingle sets have a Jaccard similarity
    of at least `threshold`, with that similarity. `progress(done, total)` is called between
    batches of texts while signatures are computed."""
    total = len(texts)
    lsh = MinHashLSH(threshold=min(lsh_threshold, threshold), num_perm=num_perm)
    step = 2000
    with lsh.insertion_session(buffer_size=step) as session:
        for start in range(0, total, step):
            sets = [grams.tolist() for grams in shingles(texts[start : start + step])]
            # The shingles are integers already: datasketch mixes (affine64's finaliser) and
            # permutes them without hashing each again.
            signatures = MinHash.generator(
                sets, num_perm=num_perm, hashfunc=_identity, scheme="affine64"
            )
            for offset, signature in enumerate(signatures):
                session.insert(start + offset, signature, check_duplication=False)
            if progress is not None:
                progress(min(start + step, total), total)
    return _verified(_candidates(lsh), texts, threshold)


def _identity(value: int) -> int:
    return value


def _candidates(lsh: MinHashLSH) -> Iterable[tuple[int, int]]:
    """Index pairs that share an LSH band bucket, each once (a big bucket: star-shaped)."""
    seen: set[tuple[int, int]] = set()
    for table in lsh.hashtables:
        for key in table.keys():  # noqa: SIM118 - a datasketch storage, not a dict
            members = table.get(key)
            if len(members) < 2:
                continue
            ordered = sorted(members)
            if len(ordered) > BUCKET_MAX:
                pivots = ordered[:3]
                pairs = ((p, m) for p in pivots for m in ordered if m > p)
            else:
                pairs = ((a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :])
            for pair in pairs:
                if pair not in seen:
                    seen.add(pair)
                    yield pair


def _verified(
    candidates: Iterable[tuple[int, int]], texts: Sequence[str], threshold: float
) -> list[Pair]:
    """The candidates whose actual Jaccard similarity reaches `threshold`; shingle sets are
    computed again for the texts involved (a small share) rather than kept for all."""
    candidates = list(candidates)
    involved = sorted({i for pair in candidates for i in pair})
    sets = dict(zip(involved, shingles([texts[i] for i in involved]), strict=True))
    pairs = []
    for a, b in candidates:
        first, second = sets[a], sets[b]
        # The Jaccard cannot reach the threshold when the sizes are too far apart.
        small, large = sorted((len(first), len(second)))
        if small < threshold * large:
            continue
        common = len(np.intersect1d(first, second, assume_unique=True))
        similarity = common / (len(first) + len(second) - common)
        if similarity >= threshold:
            pairs.append((a, b, similarity))
    return pairs


def image_near_duplicates(
    hashes: Sequence[int] | np.ndarray, *, max_distance: int = IMAGE_MAX_DISTANCE
) -> list[Pair]:
    """The pairs of 64-bit perceptual hashes at most `max_distance` bits apart, with the
    similarity 1 - distance / 64."""
    values = np.asarray(hashes, dtype=np.uint64)
    blocks = max_distance + 1
    edges = np.linspace(0, 64, blocks + 1).astype(int)
    seen: set[tuple[int, int]] = set()
    pairs: list[Pair] = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        mask = np.uint64((1 << (high - low)) - 1)
        keys = (values >> np.uint64(low)) & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends, strict=True):
            if end - start < 2:
                continue
            members = np.sort(order[start:end])
            for i, a in enumerate(members[:-1]):
                others = members[i + 1 :]
                distances = _popcount(values[others] ^ values[a])
                for b, distance in zip(others, distances, strict=True):
                    if distance <= max_distance and (int(a), int(b)) not in seen:
                        seen.add((int(a), int(b)))
                        pairs.append((int(a), int(b), 1.0 - int(distance) / 64))
    return pairs


def image_pairs_verified(
    pairs: Iterable[Pair],
    thumbnails: Mapping[int, np.ndarray | None],
    *,
    min_correlation: float = IMAGE_MIN_CORRELATION,
) -> list[Pair]:
    """The proposed `pairs` whose thumbnails (same shape, any numeric type) correlate at least
    `min_correlation`, with that correlation as their similarity; a pair with a missing
    thumbnail is dropped. Two flat thumbnails (no variance, e.g. blank images) are compared by
    their mean brightness instead."""
    kept: list[Pair] = []
    for a, b, _ in pairs:
        first, second = thumbnails.get(a), thumbnails.get(b)
        if first is None or second is None:
            continue
        similarity = _correlation(first, second)
        if similarity >= min_correlation:
            kept.append((a, b, similarity))
    return kept


def _correlation(first: np.ndarray, second: np.ndarray) -> float:
    x = np.asarray(first, dtype=np.float64).ravel()
    y = np.asarray(second, dtype=np.float64).ravel()
    x_centred, y_centred = x - x.mean(), y - y.mean()
    x_norm, y_norm = np.linalg.norm(x_centred), np.linalg.norm(y_centred)
    if x_norm < 1e-9 or y_norm < 1e-9:
        if x_norm < 1e-9 and y_norm < 1e-9:
            scale = max(float(np.abs(x).max()), float(np.abs(y).max()), 1.0)
            return 1.0 - abs(float(x.mean()) - float(y.mean())) / scale
        return 0.0
    return float(np.dot(x_centred, y_centred) / (x_norm * y_norm))


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def groups_of(count: int, pairs: Iterable[Pair]) -> list[tuple[list[int], dict[int, float]]]:
    """The connected groups (two or more) that `pairs` make among `count` indexes: each group's
    indexes, sorted, and each member's highest similarity to another member."""
    pairs = list(pairs)
    if not pairs:
        return []
    first = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
    second = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (first, second)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    best: dict[int, float] = {}
    for a, b, similarity in pairs:
        best[a] = max(best.get(a, 0.0), similarity)
        best[b] = max(best.get(b, 0.0), similarity)
    members: dict[int, list[int]] = {}
    for index in sorted(best):
        members.setdefault(int(labels[index]), []).append(index)
    return [
        (group, {i: best[i] for i in group})
        for group in sorted(members.values(), key=lambda g: g[0])
        if len(group) > 1
    ]
