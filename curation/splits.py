"""Train / validation / test splits of a dataset version, deterministic and stable.

An item's place comes from a hash of the project's seed and the item's external id, mapped to
[0, 1): below the test share it is in test, below test + validation in validation, else in
train. So the same item lands in the same split in every version (and on every machine), and
new items do not move old ones.

Stratified (per project): every labelled class keeps the split shares. Items that an earlier
version placed, under the same rule, keep their split; each new labelled item goes to the split
of its class that is furthest below its share, new items taken in hash order, so the result is
still deterministic. Items without a gold label are placed by the hash alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)

__all__ = ["SPLITS", "TEST", "TRAIN", "VALIDATION", "split_rule", "stratified_splits", "unit"]


def split_rule(*, seed: str, validation: float, test: float, stratified: bool) -> dict[str, Any]:
    """The rule a version records with itself (and compares with an earlier version's)."""
    train = round(1.0 - validation - test, 6)
    return {
        "seed": seed,
        "fractions": {TRAIN: train, VALIDATION: round(validation, 6), TEST: round(test, 6)},
        "stratified": stratified,
    }


def unit(seed: str, external_id: str) -> float:
    """The item's stable position in [0, 1)."""
    digest = hashlib.sha256(f"{seed}\x00{external_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def by_hash(rule: Mapping[str, Any], external_id: str) -> str:
    fractions = rule["fractions"]
    u = unit(rule["seed"], external_id)
    if u < fractions[TEST]:
        return TEST
    if u < fractions[TEST] + fractions[VALIDATION]:
        return VALIDATION
    return TRAIN


def stratified_splits(
    rule: Mapping[str, Any],
    labelled: Iterable[tuple[str, str]],
    earlier: Mapping[str, str],
) -> dict[str, str]:
    """external id → split for the `labelled` items, given as (external id, class key); `earlier`
    maps external ids to the split a previous version under the same rule gave them.

    The class key is the gold label (its labels joined, for multi-label), so each label
    combination is balanced as a class of its own."""
    fractions = rule["fractions"]
    kept: dict[str, str] = {}
    new_by_class: dict[str, list[tuple[float, str]]] = defaultdict(list)
    placed: dict[str, Counter] = defaultdict(Counter)
    for external_id, key in labelled:
        if external_id in earlier:
            kept[external_id] = earlier[external_id]
            placed[key][earlier[external_id]] += 1
        else:
            new_by_class[key].append((unit(rule["seed"], external_id), external_id))
    for key, newcomers in new_by_class.items():
        counts = placed[key]
        total = sum(counts.values()) + len(newcomers)
        for _, external_id in sorted(newcomers):
            # The split furthest below its share of the class; ties go to test, then validation.
            split = max(
                (TEST, VALIDATION, TRAIN),
                key=lambda s: fractions[s] * total - counts[s] if fractions[s] > 0 else -total,
            )
            counts[split] += 1
            kept[external_id] = split
    return kept
