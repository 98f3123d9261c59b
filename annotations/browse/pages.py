"""The data browser's pages: keyset pages of the items a `BrowseQuery` matches, their cursors,
and the rows the page and the API show (`rows_for`, `item_status`).

Paging is by keyset, never OFFSET: the cursor is the last row's (sort value, id). Items without a
value for the sort column (no prediction, no score) come after all the others in both
directions, ordered by id the same way; each of the two parts is read with its own query, so a
part walks one index (`(project, score, item)` of the score's table) instead of sorting a
million rows.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.db.models.functions import Substr
from django.utils import timezone

from annotations.browse.query import (
    COMPLETE,
    DECIDED,
    DEFAULT_LIMIT,
    IN_PROGRESS,
    IN_REVIEW,
    MAX_LIMIT,
    OPEN,
    PARTLY,
    SORTS,
    STATUSES,
    BrowseQuery,
    BrowseQueryError,
    items_matching,
)
from annotations.models import Item, ItemLease, Project, Review


@dataclass
class BrowseRow:
    """One row of the browser: the item and what is known about it."""

    item: Item
    status: str
    excerpt: str
    sort_value: Any
    columns: list[Any]

    @property
    def status_label(self) -> str:
        return STATUSES[self.status]

    def gold(self):
        return getattr(self.item, "gold", None)

    def prediction(self):
        return getattr(self.item, "prediction", None)

    def label_issue(self):
        return getattr(self.item, "label_issue", None)

    def duplicate(self):
        return getattr(self.item, "duplicate", None)

    def outlier(self):
        return getattr(self.item, "outlier", None)


@dataclass
class BrowsePage:
    rows: list[BrowseRow]
    next_cursor: str | None


EXCERPT_CHARS = 160


def excerpt_of(text: str | None, chars: int = EXCERPT_CHARS) -> str:
    """The first `chars` characters of `text`, with an ellipsis when there is more."""
    text = text or ""
    return text if len(text) <= chars else text[:chars].rstrip() + "…"


def encode_cursor(sort: str, desc: bool, value: Any, pk: int) -> str:
    raw = json.dumps([f"-{sort}" if desc else sort, value, pk], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(query: BrowseQuery, cursor: str) -> tuple[Any, int]:
    """The (sort value, id) a cursor holds; a cursor made for another sort, or not made here,
    is a `BrowseQueryError` on `after`."""
    bad = BrowseQueryError("after", "not a cursor of this listing: follow its next link.")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        sort, value, pk = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise bad from None
    if sort != (f"-{query.sort}" if query.desc else query.sort):
        raise BrowseQueryError("after", "this cursor belongs to another sort order.")
    if not isinstance(pk, int) or isinstance(pk, bool) or not 0 <= pk < 2**63:
        raise bad
    if value is not None and (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or abs(value) >= 2**63
    ):
        raise bad
    return value, pk


def parse_limit(value: Any, *, default: int = DEFAULT_LIMIT) -> int:
    text = str(value).strip() if value not in (None, "") else ""
    if not text:
        return default
    try:
        limit = int(text)
    except ValueError:
        raise BrowseQueryError("limit", f"{text[:50]!r} is not a whole number.") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BrowseQueryError("limit", f"between 1 and {MAX_LIMIT}.")
    return limit


def _page_ids(
    project: Project, query: BrowseQuery, after: tuple[Any, int] | None, limit: int
) -> list[tuple[int, Any]]:
    """The (id, sort value) of the next `limit` + 1 matching items after the cursor."""
    path, has_value, _ = SORTS[query.sort]
    base = items_matching(project, query)
    sign = "-" if query.desc else ""
    cmp = "lt" if query.desc else "gt"
    out: list[tuple[int, Any]] = []
    in_valued_part = has_value is None or after is None or after[0] is not None
    if in_valued_part:
        qs = base
        if has_value is not None:
            # The join's own project column lets the planner walk its (project, value, item)
            # index; a row may exist with no value (a gold label without agreement).
            qs = qs.filter(**{has_value: project, f"{path}__isnull": False})
        if after is not None:
            value, pk = after
            if path == "id":
                qs = qs.filter(**{f"id__{cmp}": pk})
            else:
                qs = qs.filter(
                    Q(**{f"{path}__{cmp}": value}) | Q(**{path: value, f"id__{cmp}": pk})
                )
        order = [f"{sign}{path}"] if path == "id" else [f"{sign}{path}", f"{sign}id"]
        out = list(qs.order_by(*order).values_list("id", path)[: limit + 1])
        if len(out) > limit or has_value is None:
            return out
        after = None  # the valued part is exhausted: go on with the rows without a value
    # The rows without a value, by id in the sort's direction.
    rest = base.filter(**{f"{path}__isnull": True})
    if after is not None:
        rest = rest.filter(**{f"id__{cmp}": after[1]})
    out += [
        (pk, None)
        for pk in rest.order_by(f"{sign}id").values_list("id", flat=True)[: limit + 1 - len(out)]
    ]
    return out


def browse_page(
    project: Project, query: BrowseQuery, *, after: str | None = None, limit: int = DEFAULT_LIMIT
) -> BrowsePage:
    """One page of the matching items in the query's order, after the cursor `after` (the
    previous page's `next_cursor`); `next_cursor` is None on the last page."""
    position = decode_cursor(query, after) if after else None
    found = _page_ids(project, query, position, limit)
    more = len(found) > limit
    found = found[:limit]
    rows = rows_for(project, [pk for pk, _ in found], query.cols)
    for row, (_, value) in zip(rows, found, strict=True):
        row.sort_value = value
    next_cursor = None
    if more and found:
        pk, value = found[-1]
        next_cursor = encode_cursor(query.sort, query.desc, value, pk)
    return BrowsePage(rows=rows, next_cursor=next_cursor)


def rows_for(project: Project, ids: Sequence[int], cols: Sequence[str] = ()) -> list[BrowseRow]:
    """The rows for the items `ids`, in that order: eight queries whatever their number."""
    if not ids:
        return []
    items = {
        item.pk: item
        for item in Item.objects.filter(project=project, pk__in=ids)
        # Prefetched, not joined: six LEFT JOINs made PostgreSQL hash whole tables for 50 rows
        # (14 ms at 10k items); each prefetch is a primary-key probe with the page's ids.
        .prefetch_related("gold", "prediction", "label_issue", "duplicate", "outlier", "review")
        .annotate(excerpt=Substr("text", 1, EXCERPT_CHARS + 1))
        .defer("text")
    }
    now = timezone.now()
    held = set(
        ItemLease.objects.filter(item_id__in=ids, expires_at__gt=now).values_list(
            "item_id", flat=True
        )
    )
    rows = []
    for pk in ids:
        item = items[pk]
        metadata = item.metadata if isinstance(item.metadata, dict) else {}
        rows.append(
            BrowseRow(
                item=item,
                status=item_status(item, held=pk in held),
                excerpt=excerpt_of(item.excerpt),
                sort_value=None,
                columns=[metadata.get(name) for name in cols],
            )
        )
    return rows


def item_status(item: Item, *, held: bool) -> str:
    """The item's status (see `STATUSES`); `held`: an annotator has a live lease on it."""
    review = getattr(item, "review", None)
    if review is not None:
        return DECIDED if review.status == Review.Status.DECIDED else IN_REVIEW
    if not item.needs_annotation:
        return COMPLETE
    if held:
        return IN_PROGRESS
    return PARTLY if item.annotation_count > 0 else OPEN
