"""The data browser's query: which items of a project match a set of filters, and how many.
The page, the API, the bulk actions ("everything that matches") and the commands all read
items through this module, so a filter means the same everywhere.

A `BrowseQuery` is parsed from a query string (`BrowseQuery.from_querydict`) and written back to
one (`to_querystring`, only the parameters that differ from the defaults, in a fixed order), so a
view can be shared and bookmarked. Bad input raises `BrowseQueryError` naming the parameter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.expressions import Expression
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from annotations.models import Annotation, GoldSource, Item, ItemLease, Project, Review
from curation.dataset_models import LabelIssue

# --- Statuses ---------------------------------------------------------------------------------

OPEN, IN_PROGRESS, PARTLY, COMPLETE, IN_REVIEW, DECIDED = (
    "open",
    "in_progress",
    "partly",
    "complete",
    "review",
    "decided",
)
#: Each status and how the page names it. An item has exactly one, the first that holds of:
#: decided by a reviewer; waiting in review; complete (no more answers wanted); held by an
#: annotator (a live lease); some answers but not enough; no answer yet.
STATUSES: dict[str, str] = {
    OPEN: "Open",
    IN_PROGRESS: "In progress",
    PARTLY: "Partly answered",
    COMPLETE: "Complete",
    IN_REVIEW: "In review",
    DECIDED: "Decided",
}

# --- Sort columns -----------------------------------------------------------------------------

#: Sort key -> (ORM path of the value, the lookup that says a row has one, or None when every
#: item has one, a label for the page).
SORTS: dict[str, tuple[str, str | None, str]] = {
    "id": ("id", None, "Id"),
    "answers": ("annotation_count", None, "Answers"),
    "agreement": ("gold__agreement", "gold__project", "Agreement"),
    "confidence": ("prediction__confidence", "prediction__project", "Confidence"),
    "error": ("label_issue__score", "label_issue__project", "Label-error score"),
    "outlier": ("outlier__score", "outlier__project", "Outlier score"),
}
DEFAULT_SORT = "id"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_COLUMNS = 10
MAX_META_FILTERS = 10
MAX_QUERY_LENGTH = 200
#: Counting stops here: the exact count of a filter matching most of a million items costs more
#: than the page itself, and "more than 10,000" is what a reader needs to know.
COUNT_BOUND = 10_000

#: Label-issue flag states a filter may ask for (`LabelIssue.Status` without "not flagged").
FLAGS = {s.value: s.label for s in LabelIssue.Status if s.value}

_RANGES = ("confidence", "agreement", "error", "outlier")
_RANGE_PATHS = {
    "confidence": "prediction__confidence",
    "agreement": "gold__agreement",
    "error": "label_issue__score",
    "outlier": "outlier__score",
}


class BrowseQueryError(ValueError):
    """A parameter of a browse query is not understood: `field` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class BrowseQuery:
    """A set of filters (all must hold), a sort and the metadata columns to show."""

    q: str = ""
    status: str = ""
    gold: str = ""
    gold_source: str = ""
    annotator: str = ""
    predicted: str = ""
    disagrees: bool = False
    flag: str = ""
    confidence_min: float | None = None
    confidence_max: float | None = None
    agreement_min: float | None = None
    agreement_max: float | None = None
    error_min: float | None = None
    error_max: float | None = None
    outlier_min: float | None = None
    outlier_max: float | None = None
    duplicates: bool = False
    group: int | None = None
    meta: list[tuple[str, str]] = field(default_factory=list)
    sort: str = DEFAULT_SORT
    desc: bool = False
    cols: list[str] = field(default_factory=list)

    @classmethod
    def from_querydict(cls, project: Project, querydict: Mapping[str, Any]) -> BrowseQuery:
        """Parse the browser's parameters (a `QueryDict`, DRF's `query_params` or a plain
        mapping). Unknown parameters are ignored; empty ones mean "no filter"."""
        get = _getter(querydict)
        query = cls(
            q=_text(get("q"), "q", MAX_QUERY_LENGTH),
            status=_choice(get("status"), "status", STATUSES),
            gold=_class_name(project, get("gold"), "gold"),
            gold_source=_choice(get("gold_source"), "gold_source", dict(GoldSource.choices)),
            annotator=_text(get("annotator"), "annotator", 150),
            predicted=_class_name(project, get("predicted"), "predicted"),
            disagrees=_flag(get("disagrees"), "disagrees"),
            flag=_choice(get("flag"), "flag", FLAGS),
            duplicates=_flag(get("duplicates"), "duplicates"),
            group=_int(get("group"), "group"),
            meta=_meta(_getlist(querydict, "meta")),
            sort=DEFAULT_SORT,
            cols=_cols(get("cols")),
        )
        for name in _RANGES:
            low = _number(get(f"{name}_min"), f"{name}_min")
            high = _number(get(f"{name}_max"), f"{name}_max")
            if low is not None and high is not None and low > high:
                raise BrowseQueryError(f"{name}_min", f"must not be above {name}_max ({high:g}).")
            setattr(query, f"{name}_min", low)
            setattr(query, f"{name}_max", high)
        sort = (get("sort") or "").strip()
        query.desc = sort.startswith("-")
        key = sort.removeprefix("-") or DEFAULT_SORT
        if key not in SORTS:
            raise BrowseQueryError("sort", f"unknown column {key!r}; one of {', '.join(SORTS)}.")
        query.sort = key
        if query.annotator and not _annotator_exists(project, query.annotator):
            raise BrowseQueryError("annotator", f"nobody named {query.annotator!r} answered here.")
        return query

    def params(self) -> list[tuple[str, str]]:
        """The parameters that differ from the defaults, in declaration order."""
        out: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "sort":
                if value != DEFAULT_SORT or self.desc:
                    out.append(("sort", f"-{value}" if self.desc else value))
            elif f.name == "desc":
                continue
            elif f.name == "meta":
                out.extend(("meta", f"{k}={v}") for k, v in value)
            elif f.name == "cols":
                if value:
                    out.append(("cols", ",".join(value)))
            elif isinstance(value, bool):
                if value:
                    out.append((f.name, "1"))
            elif isinstance(value, float):
                out.append((f.name, repr(value)))
            elif value not in (None, ""):
                out.append((f.name, str(value)))
        return out

    def to_querystring(self) -> str:
        return urlencode(self.params())

    @property
    def is_filtered(self) -> bool:
        """Whether any filter is set (sort and columns are not filters)."""
        return any(name not in ("sort", "cols") for name, _ in self.params())

    def sorted_by(self, key: str) -> str:
        """The query string of this query sorted by `key`: descending first, then flipping."""
        desc = not self.desc if key == self.sort else True
        other = BrowseQuery(**{f.name: getattr(self, f.name) for f in fields(self)})
        other.sort, other.desc = key, desc
        return other.to_querystring()


# --- Parsing helpers --------------------------------------------------------------------------


def _getter(querydict: Mapping[str, Any]):
    def get(name: str) -> str:
        value = querydict.get(name, "")
        if isinstance(value, list | tuple):  # a plain dict of lists
            value = value[-1] if value else ""
        if value is None:
            return ""
        if not isinstance(value, str):
            value = str(value)
        return value

    return get


def _getlist(querydict: Mapping[str, Any], name: str) -> list[str]:
    if hasattr(querydict, "getlist"):
        return [v for v in querydict.getlist(name) if v]
    value = querydict.get(name)
    if value is None:
        return []
    return [v for v in (value if isinstance(value, list | tuple) else [value]) if v]


def _text(value: str, name: str, limit: int) -> str:
    value = value.strip()
    if len(value) > limit:
        raise BrowseQueryError(name, f"at most {limit} characters.")
    if "\x00" in value:
        raise BrowseQueryError(name, "contains a NUL character.")
    return value


def _choice(value: str, name: str, choices: Mapping[str, str]) -> str:
    value = value.strip()
    if value and value not in choices:
        raise BrowseQueryError(name, f"unknown value {value[:50]!r}; one of {', '.join(choices)}.")
    return value


def _class_name(project: Project, value: str, name: str) -> str:
    value = value.strip()
    if value and value not in project.class_names():
        raise BrowseQueryError(name, f"the project has no class {value[:100]!r}.")
    return value


def _flag(value: str, name: str) -> bool:
    value = value.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BrowseQueryError(name, "use 1 or 0.")


def _int(value: str, name: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise BrowseQueryError(name, f"{value[:50]!r} is not a whole number.") from None
    if not 0 < number < 2**63:
        raise BrowseQueryError(name, "out of range.")
    return number


def _number(value: str, name: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BrowseQueryError(name, f"{value[:50]!r} is not a number.") from None
    if not math.isfinite(number):
        raise BrowseQueryError(name, "must be a finite number.")
    return number


def _meta(values: Sequence[str]) -> list[tuple[str, str]]:
    if len(values) > MAX_META_FILTERS:
        raise BrowseQueryError("meta", f"at most {MAX_META_FILTERS} metadata filters.")
    pairs = []
    for raw in values:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BrowseQueryError("meta", f"{raw[:50]!r}: write field=value.")
        _text(key, "meta", 100)
        _text(value, "meta", MAX_QUERY_LENGTH)
        pairs.append((key, value.strip()))
    return pairs


def _cols(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    if len(names) > MAX_COLUMNS:
        raise BrowseQueryError("cols", f"at most {MAX_COLUMNS} metadata columns.")
    for name in names:
        _text(name, "cols", 100)
    return list(dict.fromkeys(names))


def _annotator_exists(project: Project, username: str) -> bool:
    return Annotation.objects.filter(project=project, annotator__username=username).exists()


def annotators_of(project: Project) -> list[str]:
    """The usernames of everyone who answered in `project` (members who left included), sorted:
    the annotator filter's choices. A loose index scan, one probe of `annotation_hist_idx`
    (project, annotator, …) per annotator: DISTINCT over the answers read all of them on every
    page of the browser (700k answers at 1M items: 600 ms against 0.2 ms, machine loaded)."""
    answers = connection.ops.quote_name(Annotation._meta.db_table)
    users = connection.ops.quote_name(get_user_model()._meta.db_table)
    sql = (
        f"WITH RECURSIVE who (id) AS ("
        f" SELECT MIN(annotator_id) FROM {answers} WHERE project_id = %s"
        f" UNION ALL SELECT (SELECT MIN(annotator_id) FROM {answers}"
        f" WHERE project_id = %s AND annotator_id > who.id) FROM who WHERE who.id IS NOT NULL"
        f") SELECT u.username FROM who JOIN {users} u ON u.id = who.id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk, project.pk])
        return sorted(username for (username,) in cursor.fetchall())


# --- The filter -------------------------------------------------------------------------------


#: A text search that matches fewer of a project's items than this is answered from the GIN
#: index (all its matches gathered, then filtered and sorted); one that matches more walks the
#: page's order and checks each item's stored vector, stopping after a page. Both read about
#: this many rows at worst: 2,000 heap rows, or a walk through 1M / 2,000 × 51 = 25k items.
FEW_TEXT_MATCHES = 2_000
_TSQUERY = "websearch_to_tsquery('simple'::regconfig, %s)"


class _TextMatches(Expression):
    """The item's stored `text_vector` (migration 0012) matches `websearch_to_tsquery` of the
    search, which takes what people type ("a b", -c, "x y"). With `among` (the project's id),
    it is read as "the item is one of the matches the GIN index lists" instead: an InitPlan
    that gathers them once, for a search that matches few items (`_matches_few`). The item's
    column is named through the query's alias for the items table, so the filter also holds
    when the items are a subquery (a bulk action's `pk__in`)."""

    output_field = BooleanField()

    def __init__(self, q: str, *, among: int | None = None, pk: Any = None) -> None:
        super().__init__()
        self.q, self.among = q, among
        self.pk = pk if pk is not None else F("pk")

    def get_source_expressions(self) -> list[Any]:
        return [self.pk]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        (self.pk,) = exprs

    def as_sql(self, compiler, connection) -> tuple[str, list[Any]]:
        pk_sql, params = compiler.compile(self.pk)
        if self.among is None:
            items = compiler.quote_name_unless_alias(self.pk.alias)
            return f"{items}.{connection.ops.quote_name('text_vector')} @@ {_TSQUERY}", [self.q]
        table = connection.ops.quote_name(Item._meta.db_table)
        found = (
            f"SELECT found.id FROM {table} found WHERE found.project_id = %s "
            f"AND found.text_vector @@ {_TSQUERY}"
        )
        return f"{pk_sql} = ANY(ARRAY({found}))", [*params, self.among, self.q]


_SCANS = ("enable_seqscan", "enable_indexscan", "enable_indexonlyscan")


@contextmanager
def bitmap_scans_only() -> Iterator[Any]:
    """A cursor on which the planner may read tables by bitmap scans only (the only way GIN
    indexes are read), in a transaction of its own; the settings are restored on leaving, as
    SET LOCAL would last until the outermost transaction ends (a request's, a bulk action's).
    `benchmarks/browse.py` explains the text-search count with it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(f"current_setting('{s}')" for s in _SCANS))
        saved = cursor.fetchone()
        for name in _SCANS:
            cursor.execute(f"SET LOCAL {name} = off")
        yield cursor
        for name, value in zip(_SCANS, saved, strict=True):
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def _matches_few(project: Project, q: str) -> bool:
    """Whether the search matches fewer than `FEW_TEXT_MATCHES` items of `project`, when the
    planner cannot know it. A word the column's statistics list (`most_common_elems`) is
    estimated from its frequency, and the planner chooses well; a word they do not list is
    estimated at 0.5% of the items (`DEFAULT_TS_MATCH_SEL`) however rare it is, so a rare or
    absent word walked the whole project in id order (7.6 s at 1M items) expecting a page
    within a few thousand items. Such a search is counted through the GIN index, which reads a
    rare word's short posting list and at most `FEW_TEXT_MATCHES` rows (sequential and index
    scans switched off for that count alone: they would answer "none" by reading every item).
    Not for a word the statistics list: its posting list is long (25 ms for 300k items). A
    search with nothing the index can look up ("-word" alone) matches most items."""
    table = connection.ops.quote_name(Item._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT querytree(t) = 'T', (SELECT bool_and(word = ANY("
            "s.most_common_elems::text::text[])) FROM pg_stats s, "
            "unnest(tsvector_to_array(to_tsvector('simple'::regconfig, querytree(t)))) word "
            "WHERE s.schemaname = current_schema() AND s.tablename = %s "
            f"AND s.attname = 'text_vector') FROM {_TSQUERY} t",
            [Item._meta.db_table, q],
        )
        negations_only, known = cursor.fetchone()
    if negations_only or known:
        return False
    with bitmap_scans_only() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE project_id = %s "
            f"AND text_vector @@ {_TSQUERY} LIMIT %s) few",
            [project.pk, q, FEW_TEXT_MATCHES],
        )
        (found,) = cursor.fetchone()
    return found < FEW_TEXT_MATCHES


def _text_search(project: Project, q: str) -> Q:
    if connection.vendor != "postgresql":
        return Q(text__icontains=q)
    if _matches_few(project, q):
        return Q(_TextMatches(q, among=project.pk))
    return Q(_TextMatches(q))


def _meta_filter(key: str, value: str, alias: str) -> Q:
    """`metadata[key] == value`, the value as text or, when it reads as one, a JSON number or
    boolean. On PostgreSQL as `metadata @> {...}`, which the GIN index `item_metadata_idx`
    answers."""
    candidates: list[Any] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    if isinstance(parsed, bool | int | float) and not isinstance(parsed, str):
        candidates.append(parsed)
    q = Q()
    for candidate in candidates:
        if connection.vendor == "postgresql":
            q |= Q(metadata__contains={key: candidate})
        else:
            q |= Q(**{alias: candidate})  # SQLite has no JSON containment: `alias` is the key
    return q


def _labels_contain(path: str, name: str) -> Q:
    if connection.vendor == "postgresql":
        return Q(**{f"{path}__contains": [name]})
    # SQLite keeps JSON as text: a class name appears as its JSON string inside the list.
    return Q(**{f"{path}__icontains": json.dumps(name)})


def status_filter(status: str, *, now: datetime | None = None) -> Q:
    """The items that have `status` (see `STATUSES`)."""
    if status == DECIDED:
        return Q(review__status=Review.Status.DECIDED)
    if status == IN_REVIEW:
        return Q(review__status=Review.Status.OPEN)
    # NOT EXISTS, not a LEFT JOIN … IS NULL: PostgreSQL read the join's "review.id IS NULL" as
    # matching one row of a million and nested every open item against the leases (16 s for
    # "open" at 1M items); as an anti-join it walks the id order and stops after a page.
    not_reviewed = ~Q(Exists(Review.objects.filter(item=OuterRef("pk"))))
    if status == COMPLETE:
        return not_reviewed & Q(needs_annotation=False)
    held = Q(
        Exists(ItemLease.objects.filter(item=OuterRef("pk"), expires_at__gt=now or timezone.now()))
    )
    open_ = not_reviewed & Q(needs_annotation=True)
    if status == IN_PROGRESS:
        return open_ & held
    if status == PARTLY:
        return open_ & ~held & Q(annotation_count__gt=0)
    if status == OPEN:
        return open_ & ~held & Q(annotation_count=0)
    raise BrowseQueryError("status", f"unknown status {status!r}.")


def items_matching(project: Project, query: BrowseQuery) -> QuerySet[Item]:
    """The items of `project` that match every filter of `query`, unordered (bulk actions act
    on "everything that matches"; the page orders and pages them with `browse_page`)."""
    qs = Item.objects.filter(project=project)
    if query.q:
        qs = qs.filter(_text_search(project, query.q))
    if query.status:
        qs = qs.filter(status_filter(query.status))
    if query.gold:
        qs = qs.filter(_labels_contain("gold__labels", query.gold))
    if query.gold_source:
        qs = qs.filter(gold__source=query.gold_source)
    if query.annotator:
        qs = qs.filter(
            Exists(
                Annotation.objects.filter(
                    item=OuterRef("pk"),
                    # The user's id as a one-off subquery, not a join on the username: each
                    # item is then one probe of the (item, annotator) unique index.
                    annotator_id=Subquery(
                        get_user_model().objects.filter(username=query.annotator).values("pk")[:1]
                    ),
                    skipped=False,
                )
            )
        )
    if query.predicted:
        if project.is_multi_label:
            qs = qs.filter(_labels_contain("prediction__labels", query.predicted))
        else:
            qs = qs.filter(prediction__label=query.predicted)
    if query.disagrees:
        qs = qs.filter(_disagrees())
    if query.flag:
        qs = qs.filter(label_issue__status=query.flag)
    for name in _RANGES:
        low, high = getattr(query, f"{name}_min"), getattr(query, f"{name}_max")
        if low is not None:
            qs = qs.filter(**{f"{_RANGE_PATHS[name]}__gte": low})
        if high is not None:
            qs = qs.filter(**{f"{_RANGE_PATHS[name]}__lte": high})
    if query.group is not None:
        qs = qs.filter(duplicate__group_id=query.group)
    elif query.duplicates:
        qs = qs.filter(duplicate__isnull=False)
    for i, (key, value) in enumerate(query.meta):
        alias = f"browse_meta_{i}"
        if connection.vendor != "postgresql":
            qs = qs.alias(**{alias: KeyTransform(key, "metadata")})
        qs = qs.filter(_meta_filter(key, value, alias))
    return qs


def _disagrees() -> Q:
    """The model's predicted labels are not the gold labels (both present; sets compared)."""
    has_both = Q(gold__labels__isnull=False, prediction__isnull=False)
    if connection.vendor == "postgresql":
        same = Q(gold__labels__contains=F("prediction__labels")) & Q(
            prediction__labels__contains=F("gold__labels")
        )
    else:
        same = Q(gold__labels=F("prediction__labels"))
    return has_both & ~same


def count_matching(
    project: Project, query: BrowseQuery, *, bound: int = COUNT_BOUND
) -> tuple[int, bool]:
    """How many items match, and whether that is exact: counting stops past `bound` (the
    answer is then `bound` and not exact). Without filters it is the project's item counter."""
    if not query.is_filtered:
        return project.item_count, True
    # Unordered: in the items' id order the count walked the item index and probed each
    # filter's table item by item; unordered, the planner starts from the filter's own index.
    counted = items_matching(project, query).order_by().values("pk")[: bound + 1].count()
    return (counted, True) if counted <= bound else (bound, False)
