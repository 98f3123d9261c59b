"""How good each annotator is: plain functions of a project's answers and adjudicated labels.

Two measures per annotator, because they answer different questions:

- **accuracy** against *adjudicated* gold labels, the items a reviewer decided. The reviewer
  saw the answers, but their decision is the nearest thing to ground truth a project has.
- **agreement** with the others on every other item, leave-one-out: each answer is compared
  with the majority of the *other* annotators' answers on that item. The stored gold label of
  those items is a majority (or a consensus weighted by annotator quality) that includes the
  annotator's own vote, so judging by it would be self-confirming: with two answers per item
  everyone would agree with every gold label that is not a tie, and with three each answer is a
  third of the majority it is judged by. An item whose other answers tie has no reference and
  is left out, as is an item no one else answered.

An answer is right when its set of classes equals the reference set (multi-label too). The
majority is `annotations.gold.derive`'s: the most common class (single-label; a tie gives
none), or each class that more than half of the others chose (multi-label).

`curation.services.annotator_quality` reads a project into these functions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from curation.learner import wilson_interval

__all__ = [
    "MIN_ITEMS",
    "Answers",
    "Scores",
    "annotator_table",
    "encode_answers",
    "score_annotators",
]

#: Items an annotator needs on a measure before it is used to judge them.
MIN_ITEMS = 5

# Answers compared at once in the leave-one-out step: bounds memory at (rows × classes).
_CHUNK = 65_536


@dataclass(frozen=True)
class Answers:
    """Answers as parallel arrays: per answer its item and annotator (indices into `items`
    and `annotators`, the sorted distinct keys) and the classes it chose, (answers × classes)."""

    classes: tuple[str, ...]
    items: np.ndarray
    annotators: np.ndarray
    item_index: np.ndarray
    annotator_index: np.ndarray
    chosen: np.ndarray


@dataclass(frozen=True)
class Scores:
    """Counts per annotator, in the order of `annotators`."""

    annotators: tuple
    answers: np.ndarray
    gold_items: np.ndarray  # answers on items with an adjudicated label
    correct: np.ndarray  # … equal to it
    agreement_items: np.ndarray  # answers on the other items that have a leave-one-out majority
    agreeing: np.ndarray  # … equal to it


def encode_answers(
    rows: Iterable[tuple[Hashable, Hashable, Sequence[str]]],
    classes: Sequence[str],
    *,
    multi_label: bool,
) -> Answers:
    """From (item, annotator, class names) rows. Names not in `classes` are ignored, and a
    single-label answer left with no class is dropped, as `agreement_report` does. Each distinct
    answer is converted once: a project has few of them, and many rows."""
    rows = list(rows)
    distinct: dict[tuple[str, ...], int] = {}
    codes = np.fromiter(
        (distinct.setdefault(tuple(labels or ()), len(distinct)) for _, _, labels in rows),
        dtype=np.int64,
        count=len(rows),
    )
    index = {name: i for i, name in enumerate(classes)}
    table = np.zeros((len(distinct), len(classes)), dtype=bool)
    for answer, code in distinct.items():
        if multi_label:
            table[code, [index[n] for n in answer if n in index]] = True
        elif answer and answer[0] in index:
            table[code, index[answer[0]]] = True
    usable = np.ones(len(rows), dtype=bool) if multi_label else table.any(axis=1)[codes]
    if not usable.any():
        empty = np.zeros(0, dtype=np.int64)
        chosen = np.zeros((0, len(classes)), dtype=bool)
        return Answers(tuple(classes), empty, empty, empty, empty, chosen)
    item_keys = np.asarray([row[0] for row in rows])[usable]
    annotator_keys = np.asarray([row[1] for row in rows])[usable]
    items, item_index = np.unique(item_keys, return_inverse=True)
    annotators, annotator_index = np.unique(annotator_keys, return_inverse=True)
    chosen = table[codes[usable]]
    return Answers(tuple(classes), items, annotators, item_index, annotator_index, chosen)


def score_annotators(
    answers: Answers, adjudicated: Iterable[tuple[Hashable, Sequence[str]]], *, multi_label: bool
) -> Scores:
    """Each annotator's accuracy and leave-one-out agreement counts. `adjudicated`: the
    (item, class names) of the items a reviewer decided; items without answers are ignored."""
    n_items, k = len(answers.items), len(answers.classes)
    items, chosen = answers.item_index, answers.chosen
    position = {key: n for n, key in enumerate(answers.items.tolist())}
    index = {name: i for i, name in enumerate(answers.classes)}
    gold = np.zeros((n_items, k), dtype=bool)
    decided = np.zeros(n_items, dtype=bool)
    for item, labels in adjudicated:
        n = position.get(item)
        if n is not None and labels is not None:
            decided[n] = True
            gold[n, [index[x] for x in labels if x in index]] = True

    on_gold = decided[items]
    right = on_gold & (chosen == gold[items]).all(axis=1)

    # Leave-one-out: the item's votes minus the annotator's own.
    ones = chosen.astype(np.int32)
    votes = np.zeros((n_items, k), dtype=np.int32)
    for c in range(k):
        votes[:, c] = np.bincount(items, weights=ones[:, c], minlength=n_items)
    others = np.bincount(items, minlength=n_items)[items] - 1
    rows = np.flatnonzero(~on_gold & (others > 0))
    compared = np.zeros(len(items), dtype=bool)
    agrees = np.zeros(len(items), dtype=bool)
    for start in range(0, len(rows), _CHUNK):
        r = rows[start : start + _CHUNK]
        rest = votes[items[r]] - ones[r]
        if multi_label:
            compared[r] = True
            agrees[r] = ((2 * rest > others[r, None]) == chosen[r]).all(axis=1)
        else:
            top = rest.max(axis=1)
            unique = (rest == top[:, None]).sum(axis=1) == 1  # a tie gives no reference
            compared[r] = unique
            agrees[r] = unique & (rest.argmax(axis=1) == chosen[r].argmax(axis=1))

    who, n_annotators = answers.annotator_index, len(answers.annotators)

    def per_annotator(mask: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(who if mask is None else who[mask], minlength=n_annotators)

    return Scores(
        annotators=tuple(answers.annotators.tolist()),
        answers=per_annotator(),
        gold_items=per_annotator(on_gold),
        correct=per_annotator(right),
        agreement_items=per_annotator(compared),
        agreeing=per_annotator(agrees),
    )


def _rate(hits: int, total: int) -> tuple[float | None, list[float] | None]:
    if total == 0:
        return None, None
    return hits / total, list(wilson_interval(hits, total))


def annotator_table(scores: Scores, *, threshold: float) -> list[dict]:
    """One row per annotator, sorted by name: the counts, accuracy and agreement with 95%
    Wilson intervals, and `below_threshold`. An annotator is judged on accuracy once they have
    `MIN_ITEMS` adjudicated items, else on agreement once they have that many compared items,
    else not at all (`quality` None): a handful of items says little about a person."""
    out = []
    for n, key in enumerate(scores.annotators):
        gold_items, agreement_items = int(scores.gold_items[n]), int(scores.agreement_items[n])
        accuracy, accuracy_interval = _rate(int(scores.correct[n]), gold_items)
        agreement, agreement_interval = _rate(int(scores.agreeing[n]), agreement_items)
        basis, quality = None, None
        if gold_items >= MIN_ITEMS:
            basis, quality = "gold", accuracy
        elif agreement_items >= MIN_ITEMS:
            basis, quality = "agreement", agreement
        out.append(
            {
                "annotator": str(key),
                "answers": int(scores.answers[n]),
                "gold_items": gold_items,
                "correct": int(scores.correct[n]),
                "accuracy": accuracy,
                "accuracy_interval": accuracy_interval,
                "agreement_items": agreement_items,
                "agreeing": int(scores.agreeing[n]),
                "agreement": agreement,
                "agreement_interval": agreement_interval,
                "quality": quality,
                "quality_basis": basis,
                "below_threshold": quality is not None and quality < threshold,
            }
        )
    out.sort(key=lambda row: row["annotator"])
    return out
