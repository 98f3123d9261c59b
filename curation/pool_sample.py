"""The training worker's pool sample: feature rows of a uniform random sample of open items.

Scoring a fixed-size sample after every label keeps a run's cost flat from 10k to 1M items
(random subsampling of the pool is the standard way to scale uncertainty sampling). The sample
is drawn by walking the queue index below a random priority: unranked items' priorities are
i.i.d. uniform, so the items just below a random threshold are a uniform random sample, in one
index range scan. Answered items leave it at once; after each run a slice is replaced by fresh
random items, so over time the whole pool is visited.

The rows are kept in blocks of at most `BLOCK_ROWS`, so dropping an answered item or rotating
the oldest slice copies one small block, never the whole matrix, while scoring makes a few
dozen matrix products rather than one per rotation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from django.db import connection

from annotations.models import Item, Project
from curation.features import item_features
from curation.featurizers import Featurizer
from curation.learner import IncrementalLearner

__all__ = [
    "BLOCK_ROWS",
    "POOL_SAMPLE",
    "SAMPLE_CHECK_RUNS",
    "SAMPLE_GROW",
    "SAMPLE_ROTATE",
    "PoolSample",
    "SampleBlock",
    "random_open_items",
]

#: Open items whose features a worker keeps and scores after every label.
POOL_SAMPLE = 20_000
#: Items added to a growing sample per run, and replaced in a full one, after the announcement.
SAMPLE_GROW = 1_000
SAMPLE_ROTATE = 100
#: Runs between two checks that every sampled item is still open (items answered through the
#: trainer's own catch-up leave the sample at once; this catches deletions and the like).
SAMPLE_CHECK_RUNS = 20
#: Most rows per block: small enough that a block copy is cheap, large enough that scoring the
#: sample is a few products.
BLOCK_ROWS = 1_000


@dataclass
class SampleBlock:
    """Some items of the pool sample with their feature rows."""

    ids: list[int]
    X: Any


def _stack(parts: list[Any]) -> Any:
    return sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.vstack(parts)


@dataclass
class PoolSample:
    """The sample's blocks, oldest first."""

    blocks: list[SampleBlock] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.blocks)

    def size(self) -> int:
        return sum(len(b.ids) for b in self.blocks)

    def ids(self) -> list[int]:
        return [i for b in self.blocks for i in b.ids]

    def matrix(self) -> Any:
        return _stack([b.X for b in self.blocks])

    def proba(self, learner: IncrementalLearner, k: int) -> tuple[list[int], np.ndarray]:
        """(sampled item ids, their class probabilities), block by block (no copy of the rows)."""
        parts = [learner.predict_proba(b.X) for b in self.blocks]
        return self.ids(), (np.vstack(parts) if parts else np.zeros((0, k)))

    def rows(self, item_ids: list[int]) -> dict[int, Any]:
        """Feature rows (1 × d) of those of `item_ids` in the sample."""
        wanted = set(item_ids)
        found = {}
        for block in self.blocks:
            for r, item_id in enumerate(block.ids):
                if item_id in wanted:
                    found[item_id] = block.X[r : r + 1]
        return found

    def drop(self, item_ids: set[int]) -> None:
        """Take items out (answered, deleted), copying only the blocks holding them."""
        if not item_ids:
            return
        kept_blocks = []
        for block in self.blocks:
            keep = [r for r, i in enumerate(block.ids) if i not in item_ids]
            if len(keep) == len(block.ids):
                kept_blocks.append(block)
            elif keep:
                kept_blocks.append(SampleBlock([block.ids[r] for r in keep], block.X[keep]))
        self.blocks = kept_blocks

    def drop_oldest(self, n: int) -> int:
        """Drop the `n` oldest items (fewer if the sample is smaller); return how many went."""
        dropped = 0
        while self.blocks and dropped < n:
            first, need = self.blocks[0], n - dropped
            if len(first.ids) <= need:
                self.blocks.pop(0)
                dropped += len(first.ids)
            else:
                self.blocks[0] = SampleBlock(first.ids[need:], first.X[need:])
                dropped += need
        return dropped

    def append(self, ids: list[int], X: Any) -> None:
        """Add rows, merged into the newest block while it stays within BLOCK_ROWS."""
        if not ids:
            return
        last = self.blocks[-1] if self.blocks else None
        if last is not None and len(last.ids) + len(ids) <= BLOCK_ROWS:
            self.blocks[-1] = SampleBlock(last.ids + list(ids), _stack([last.X, X]))
        else:
            self.blocks.append(SampleBlock(list(ids), X))

    def refresh(
        self,
        project: Project,
        featurizer: Featurizer,
        rng: np.random.Generator,
        *,
        check: bool = False,
    ) -> None:
        """Add fresh random open items: SAMPLE_GROW while the sample is below POOL_SAMPLE,
        else replace its oldest SAMPLE_ROTATE items, so over time the whole pool gets visited.
        With `check`, first drop the items that are not open any more."""
        if check and self.blocks:
            ids = self.ids()
            self.drop(set(ids) - _still_open(ids))
        wanted = min(SAMPLE_GROW, POOL_SAMPLE - self.size())
        if wanted <= 0:
            wanted = self.drop_oldest(SAMPLE_ROTATE)
        have = set(self.ids())
        fresh = [i for i in random_open_items(project, wanted, rng) if i not in have]
        if not fresh:
            return
        X, kept = item_features(project, featurizer, fresh)
        self.append(list(kept), X)


def _still_open(ids: list[int]) -> set[int]:
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Item._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {table} WHERE id = ANY(%s::bigint[]) AND needs_annotation",
                [int_array(ids)],
            )
            return {row[0] for row in cursor.fetchall()}
    found: set[int] = set()
    for start in range(0, len(ids), 500):  # SQLite's limit on query parameters
        chunk = ids[start : start + 500]
        found.update(
            Item.objects.filter(pk__in=chunk, needs_annotation=True).values_list("id", flat=True)
        )
    return found


def int_array(values: list[int]) -> str:
    """A PostgreSQL array literal of integers, for `%s::bigint[]`: psycopg adapts a Python list
    element by element, which cost ~15 ms a run for the ranking's 1,000 ids (cProfile)."""
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def float_array(values: list[float]) -> str:
    """A PostgreSQL array literal of floats (repr round-trips exactly), for `%s::float8[]`."""
    return "{" + ",".join(repr(float(v)) for v in values) + "}"


def random_open_items(
    project: Project, n: int, rng: np.random.Generator, *, include_ranked: bool = False
) -> list[int]:
    """Up to n open items drawn uniformly at random, in one walk of item_queue_idx.

    Unranked items keep the uniform random priority they got at import (or when they left the
    ranked head), independent of their content, so the items just below a random threshold are
    a uniform random sample. Wraps around when the threshold is near 0. With `include_ranked`,
    the ranked head takes part too: each of its items in place of a random unranked one.
    """
    if n <= 0:
        return []
    cut = float(rng.random())
    open_items = Item.objects.filter(project=project, needs_annotation=True)
    if include_ranked:
        ranked = list(open_items.filter(priority__gte=1.0).values_list("id", flat=True))
        unranked = random_open_items(project, n, rng)
        pool = ranked + unranked
        if not pool:
            return []
        # Every open item equally likely: a ranked item stands for itself among the unranked
        # sample, whose size approximates the rest of the pool only when it is small; so weigh
        # by the true counts.
        total = project.remaining_count  # the project's counters (read as this run began)
        share_ranked = len(ranked) / total if total else 0.0
        picks = []
        r_iter, u_iter = iter(rng.permutation(ranked).tolist()), iter(unranked)
        for _ in range(n):
            source = r_iter if rng.random() < share_ranked else u_iter
            chosen = next(source, None)
            if chosen is None:
                chosen = next(u_iter if source is r_iter else r_iter, None)
            if chosen is None:
                break
            picks.append(int(chosen))
        return picks
    below = list(
        open_items.filter(priority__lt=cut)
        .order_by("-priority", "id")
        .values_list("id", flat=True)[:n]
    )
    if len(below) < n:
        above = open_items.filter(priority__gte=cut, priority__lt=1.0)
        below += list(
            above.order_by("-priority", "id").values_list("id", flat=True)[: n - len(below)]
        )
    return below
