"""Weaving the ranked head of the queue: typical items in turn with ranked ones, and the
exploration share of random items (`curation.trainer`). Pure functions of positions."""

from __future__ import annotations

import numpy as np

__all__ = ["alternate", "weave_exploration"]


def alternate(first: list[int], second: list[int]) -> list[int]:
    """One from each list in turn, starting with `first`, skipping any already taken."""
    woven: list[int] = []
    taken: set[int] = set()
    sources = [iter(first), iter(second)]
    while sources:
        for source in list(sources):
            pick = next((r for r in source if r not in taken), None)
            if pick is None:
                sources.remove(source)
            else:
                woven.append(pick)
                taken.add(pick)
    return woven


def weave_exploration(
    order: list[int], n: int, share: float, rng: np.random.Generator
) -> list[int]:
    """Each place of the head, the first included, holds a random item of the sample with
    probability `share` instead of the next best one. Since the head is rewritten after every
    label, about that share of the items served are picked at random, which keeps the labelled
    set from drifting into the model's own idea of its blind spots."""
    if share <= 0 or not order:
        return order
    explore = rng.random(len(order)) < share
    if not explore.any():
        return order
    best = iter(order)
    randoms = iter(rng.permutation(n).tolist())
    woven: list[int] = []
    taken: set[int] = set()
    for flagged in explore:
        for source in (randoms, best) if flagged else (best, randoms):
            pick = next((r for r in source if r not in taken), None)
            if pick is not None:
                break
        if pick is None:
            break
        woven.append(pick)
        taken.add(pick)
    return woven
