#!/usr/bin/env python
"""Latency of the data browser over HTTP at 10k–1M items: the first page, filtered pages
(status, gold label, text search, confidence range sorted by label-error score), the next page
of a sort and the API's first page, as a logged-in reviewer, against the production ASGI server
on PostgreSQL; a filtered page's count of matching items, which the page loads with a request
of its own after its table, is timed as its own row. Target: p95 under 100 ms at 1M items.

    python benchmarks/browse.py --sizes 10000            # proves it runs (~1 min)
    python benchmarks/browse.py                          # 1M items: run on an idle machine

Items are loaded with COPY (`benchmarks.next_item.load_items`) into projects of their own
(bench-browse-*), and what the analyses would have found is written with one INSERT … SELECT
per table: a gold label for 30% of the items, a prediction for 80%, a label-error score for
every gold label, an outlier score for every item, duplicate pairs for 1% and metadata. They
are reused by later runs; `--reload` loads them again. Every request opens a fresh connection,
as in `next_item.py`, whose server, login and percentile helpers this script uses. Results go
to stdout and --output (default benchmarks/results/browse.md), with EXPLAIN ANALYZE of each
query at the largest size.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import next_item as ni  # noqa: E402  (needs ROOT on sys.path)

PREFIX = "bench-browse-"
REVIEWER = "bench-annotator-0"  # made a reviewer of the browse projects
ANNOTATORS = 5  # bench-annotator-0…4 answered the items (the annotator filter)
#: The pages measured: (name, path under /projects/<pk>/ or /api/projects/<pk>/, is_api).
PAGES = [
    ("first page", "data/", False),
    ("status = complete", "data/?status=complete", False),
    ("gold label = positive", "data/?gold=positive", False),
    ("text search", "data/?q=refund+battery", False),
    ("text search, a word no item has", "data/?q=warranty", False),
    ("confidence 0.4–0.6, by label-error score", "data/?confidence_min=0.4&confidence_max=0.6"
     "&sort=-error", False),
    ("sort by outlier score, desc", "data/?sort=-outlier", False),
    ("metadata source = web", "data/?meta=source%3Dweb", False),
    ("likely label errors, by score", "data/?flag=flagged&sort=-error", False),
    ("API first page", "data/", True),
]  # fmt: skip
#: The queries whose plans are written (`--plans`), beyond the pages above: every sort (first
#: and next page), every status, each kind of filter and a combination.
PLANS = [
    ("sort by agreement, desc", "sort=-agreement"),
    ("sort by agreement", "sort=agreement"),
    ("sort by answers, desc", "sort=-answers"),
    ("sort by confidence", "sort=confidence"),
    ("sort by confidence, desc", "sort=-confidence"),
    ("sort by label-error score, desc", "sort=-error"),
    ("sort by outlier score", "sort=outlier"),
    ("sort by id, desc", "sort=-id"),
    *((f"status = {s}", f"status={s}")
      for s in ("open", "in_progress", "partly", "complete", "review", "decided")),
    ("gold label = neutral", "gold=neutral"),
    ("gold source = majority", "gold_source=majority"),
    ("predicted = negative", "predicted=negative"),
    ("model disagrees with gold", "disagrees=1"),
    ("annotator", "annotator=bench-annotator-2"),
    ("flag = flagged", "flag=flagged"),
    ("has duplicates", "duplicates=1"),
    ("agreement ≤ 0.5", "agreement_max=0.5"),
    ("label-error score ≥ 0.9", "error_min=0.9"),
    ("metadata batch = 7", "meta=batch%3D7"),
    ("text search, one item's word", "q=123456"),
    ("text search, common and rare word", "q=battery+123456&sort=-outlier"),
    ("text search, only a negation", "q=-battery"),
    ("disagrees + predicted, by confidence desc",
     "disagrees=1&predicted=negative&sort=-confidence"),
    ("status complete + meta, by label-error score",
     "status=complete&meta=source%3Dweb&sort=-error"),
    ("gold + annotator + text, by outlier", "gold=positive&annotator=bench-annotator-1"
     "&q=battery&sort=-outlier"),
]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_bench")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'' for in-memory")
    p.add_argument("--sizes", default="1000000", help="items per project, comma-separated")
    p.add_argument("--requests", type=int, default=60, help="measured requests per page")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    p.add_argument("--reload", action="store_true", help="load the projects again")
    p.add_argument("--reseed", action="store_true", help="write the analyses' rows again")
    p.add_argument("--plans", action="store_true", help="only write the queries' plans")
    p.add_argument("--output", default=str(ni.RESULTS / "browse.md"))
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    return args


def _tables() -> dict[str, str]:
    from annotations.models import Annotation, GoldLabel, Item, ItemLease, Review
    from curation.dataset_models import (
        DuplicateGroup,
        ItemDuplicate,
        ItemOutlier,
        ItemPrediction,
        LabelIssue,
        PredictionChange,
    )

    models = (Annotation, GoldLabel, Item, ItemLease, Review, DuplicateGroup, ItemDuplicate)
    models += (ItemOutlier, ItemPrediction, LabelIssue, PredictionChange)
    return {m.__name__: m._meta.db_table for m in models}


def delete_analyses(pk: int) -> None:
    from django.db import connection, transaction

    t = _tables()
    with transaction.atomic(), connection.cursor() as cur:
        for name in ("ItemDuplicate", "DuplicateGroup", "ItemOutlier", "LabelIssue"):
            cur.execute(f"DELETE FROM {t[name]} WHERE project_id = %s", [pk])
        for name in ("ItemPrediction", "PredictionChange", "GoldLabel", "Review"):
            cur.execute(f"DELETE FROM {t[name]} WHERE project_id = %s", [pk])
        for name in ("Annotation", "ItemLease"):
            cur.execute(f"DELETE FROM {t[name]} WHERE project_id = %s", [pk])


def seed_analyses(pk: int, annotator_ids: list[int]) -> float:
    """What the answers, reviews and analyses would have left, written in the database itself.

    By item id: 30% have two answers and a gold label (agreement 0.5 or 1.0), 10% one answer;
    80% have a prediction, which differs from the gold label for one in eight; every gold label
    has a label-error score, 10% of them flagged (some sent to review, fixed or dismissed);
    every item has an outlier score; 1% are in duplicate pairs; 2% are in review (half
    decided); a few are held by an annotator. Answers are spread over `annotator_ids`."""
    from django.db import connection, transaction

    t = _tables()
    started = time.perf_counter()
    gold_class = "(ARRAY['positive','negative','neutral'])[1 + (i.id %% 3)]"
    # One gold-labelled item in eight gets another class predicted (the "disagrees" filter).
    predicted_class = (
        "(ARRAY['positive','negative','neutral'])[1 + ((i.id + (i.id %% 8 = 0)::int) %% 3)]"
    )
    people = "ARRAY[" + ",".join(str(u) for u in annotator_ids) + "]::int[]"
    n = len(annotator_ids)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT setseed(0.42)")
        cur.execute(
            f"UPDATE {t['Item']} SET metadata = jsonb_build_object('source', "
            "(ARRAY['web','mail','app','shop','call'])[1 + (id %% 5)], 'batch', id %% 100), "
            "annotation_count = CASE WHEN id %% 10 < 3 THEN 2 WHEN id %% 10 = 3 THEN 1 ELSE 0 END, "
            "needs_annotation = NOT (id %% 10 < 3) WHERE project_id = %s",
            [pk],
        )
        # The answers behind the counts: two different annotators, or one.
        for k, (which, share) in enumerate((("i.id", "< 4"), ("i.id + 1", "< 3"))):
            cur.execute(
                f"INSERT INTO {t['Annotation']} (project_id, item_id, annotator_id, labels, "
                "skipped, time_spent_ms, client_uuid, created_at, updated_at) "
                f"SELECT i.project_id, i.id, ({people})[1 + (({which}) %% {n})], "
                f"jsonb_build_array({gold_class}), false, 1500, gen_random_uuid(), "
                f"now() - interval '{k + 1} hours', now() - interval '{k + 1} hours' "
                f"FROM {t['Item']} i WHERE i.project_id = %s AND i.id %% 10 {share}",
                [pk],
            )
        cur.execute(
            f"INSERT INTO {t['GoldLabel']} (item_id, project_id, labels, source, agreement, "
            f"answers, updated_at) SELECT i.id, i.project_id, jsonb_build_array({gold_class}), "
            "'majority', (ARRAY[0.5, 1.0])[1 + (i.id / 10 %% 2)], 2, now() "
            f"FROM {t['Item']} i WHERE i.project_id = %s AND i.id %% 10 < 3",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['ItemPrediction']} (item_id, project_id, labels, label, confidence, "
            f"version, updated_at) SELECT i.id, i.project_id, jsonb_build_array(c), c, "
            "0.34 + random() * 0.66, 7, now() FROM "
            f"(SELECT id, project_id, {predicted_class} AS c FROM {t['Item']} i "
            "WHERE project_id = %s AND id %% 5 <> 4) i",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['LabelIssue']} (item_id, project_id, gold, score, suggested, "
            "probabilities, status, updated_at) SELECT item_id, project_id, labels, score, "
            "'negative', '{}', CASE WHEN score >= 0.92 THEN 'flagged' WHEN score >= 0.91 THEN "
            "'review' WHEN score >= 0.905 THEN 'fixed' WHEN score >= 0.9 THEN 'dismissed' "
            f"ELSE '' END, now() FROM (SELECT g.*, random() AS score FROM {t['GoldLabel']} g "
            "WHERE g.project_id = %s) g",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['Review']} (project_id, item_id, status, reasons, model_labels, "
            "flag_note, labels, decided_at, comment, created_at, updated_at) "
            "SELECT project_id, id, CASE WHEN id %% 100 = 1 THEN 'open' ELSE 'decided' END, "
            "'[\"disagreement\"]', '[]', '', CASE WHEN id %% 100 = 2 THEN '[\"neutral\"]'::jsonb "
            "END, CASE WHEN id %% 100 = 2 THEN now() END, '', now(), now() "
            f"FROM {t['Item']} WHERE project_id = %s AND id %% 100 IN (1, 2)",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['ItemLease']} (project_id, item_id, user_id, created_at, "
            f"expires_at) SELECT project_id, id, {annotator_ids[0]}, now(), "
            f"now() + interval '1 day' FROM {t['Item']} WHERE project_id = %s "
            "AND id %% 10 = 5 ORDER BY id LIMIT 20",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['ItemOutlier']} (item_id, project_id, score, neighbours, "
            f"updated_at) SELECT id, project_id, random() * 4, '[]', now() FROM {t['Item']} "
            "WHERE project_id = %s",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['DuplicateGroup']} (project_id, kind, size, conflicting, "
            f"created_at) SELECT %s, 'near', 2, false, now() FROM {t['Item']} "
            "WHERE project_id = %s AND id %% 200 = 0",
            [pk, pk],
        )
        cur.execute(
            f"INSERT INTO {t['ItemDuplicate']} (item_id, group_id, project_id, similarity) "
            f"SELECT i.id, g.id, i.project_id, 0.95 FROM (SELECT id, project_id, "
            f"row_number() OVER (ORDER BY id) AS n FROM {t['Item']} WHERE project_id = %s "
            "AND id %% 100 = 0) i JOIN (SELECT id, row_number() OVER (ORDER BY id) AS n FROM "
            f"{t['DuplicateGroup']} WHERE project_id = %s) g ON g.n = (i.n + 1) / 2",
            [pk, pk],
        )
    with connection.cursor() as cur:
        for name in ("Item", "Annotation", "GoldLabel", "ItemPrediction", "LabelIssue"):
            cur.execute(f"VACUUM ANALYZE {t[name]}")
        for name in ("ItemOutlier", "ItemDuplicate", "DuplicateGroup", "Review", "ItemLease"):
            cur.execute(f"VACUUM ANALYZE {t[name]}")
    return time.perf_counter() - started


def prepare(size: int, *, reload: bool, reseed: bool = False) -> int:
    from django.contrib.auth import get_user_model

    from annotations.models import Membership, Project
    from annotations.services import project_create

    name = f"{PREFIX}{size}"
    project = Project.objects.filter(name=name).first()
    if project is not None and (reload or project.item_count != size):
        delete_analyses(project.pk)
        ni.delete_project(project.pk)
        project = None
    if project is None:
        project = project_create(name=name, classes=ni.CLASSES)
        print(f"{name}: loaded {size:,} items in {ni.load_items(project.pk, size):.1f} s")
        reseed = True
    else:
        print(f"{name}: reusing {size:,} items")
    annotators = list(
        get_user_model()
        .objects.filter(username__startswith=ni.USER_PREFIX)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if reseed:
        delete_analyses(project.pk)
        seconds = seed_analyses(project.pk, annotators)
        print(f"{name}: wrote the answers' and analyses' rows in {seconds:.1f} s")
    user = get_user_model().objects.get(username=REVIEWER)
    Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": Membership.Role.REVIEWER}
    )
    return project.pk


_NEXT = re.compile(rb'id="next-page" href="([^"]+)"')
#: A filtered page loads its count of matching items with a request of its own (htmx).
_COUNT = re.compile(rb'id="browse-count" hx-get="([^"]+)"')


def _timed(port: int, url: str, headers: dict[str, str], args) -> tuple[float, float, int, bytes]:
    """p50 and p95 ms of `url` over the measured requests, its size and its last body."""
    times = []
    body = b""
    for i in range(args.warmup + args.requests):
        started = time.perf_counter()
        status, _, body = ni.request(port, "GET", url, None, headers)
        elapsed = (time.perf_counter() - started) * 1000
        if status != 200:
            raise SystemExit(f"GET {url}: HTTP {status}\n{body[:500]!r}")
        if i >= args.warmup:
            times.append(elapsed)
    p50, p95, _ = ni.percentiles(times)
    return p50, p95, len(body), body


def measure(port: int, pk: int, who: ni.Annotator, args) -> list[tuple[str, float, float, int]]:
    """Every page's own requests: the page, then (a filtered page) the count it loads after
    its table, as htmx sends it; each row is one request's latency."""
    rows = []
    pages = [(name, path, api) for name, path, api in PAGES]
    # The second page of the label-error sort: the cursor from the first page's next link.
    status, _, body = ni.request(port, "GET", f"/projects/{pk}/data/?sort=-error", None,
                                 who.headers())  # fmt: skip
    found = _NEXT.search(body)
    if status == 200 and found:
        path = found.group(1).decode().replace("&amp;", "&").split(f"/projects/{pk}/", 1)[1]
        pages.append(("next page, by label-error score", path, False))
    for name, path, api in pages:
        url = f"/api/projects/{pk}/{path}" if api else f"/projects/{pk}/{path}"
        p50, p95, size, body = _timed(port, url, who.headers(), args)
        rows.append((name, p50, p95, size))
        print(f"  {name:45} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
        count = None if api else _COUNT.search(body)
        if count:
            count_url = count.group(1).decode().replace("&amp;", "&")
            p50, p95, size, _ = _timed(port, count_url, who.headers(**{"HX-Request": "true"}), args)
            rows.append((f"{name}: its count", p50, p95, size))
            print(f"  {name + ': its count':45} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    return rows


_EXECUTION = re.compile(r"Execution Time: ([0-9.]+) ms")
ROW_QUERIES = 8  # `rows_for`: the items, six prefetches, the leases


def cell(runs: list[tuple[float, str]]) -> str:
    return " + ".join(f"{ms:.1f}" for ms, _ in runs) or "–"


def explain(pk: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of every query behind each page (the ids, the rows' prefetches,
    the bounded count) and of the next page of each sort; a table of their execution times,
    then the plans of the id and count queries (the rows' prefetches are primary-key probes)."""
    from django.db import connection
    from django.http import QueryDict
    from django.test.utils import CaptureQueriesContext

    from annotations.browse import BrowseQuery, browse_page, count_matching
    from annotations.browse.query import bitmap_scans_only
    from annotations.models import Project

    project = Project.objects.get(pk=pk)
    cases = [(name, path.partition("?")[2]) for name, path, api in PAGES if not api]
    cases += PLANS
    table = [
        "| Page | ids ms | next page ids ms | rows ms | count ms |",
        "|---|---:|---:|---:|---:|",
    ]
    details = []

    def run(sql: str) -> tuple[float, str]:
        # The text search's count of its matches runs with bitmap scans only, as in `query`.
        probe = sql.startswith("SELECT count(*) FROM (SELECT 1 FROM")
        with bitmap_scans_only() if probe else connection.cursor() as cur:
            cur.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = "\n".join(r[0] for r in cur.fetchall())
        return float(_EXECUTION.search(plan).group(1)), plan

    def sqls(captured: CaptureQueriesContext, start: int = 0, end: int | None = None) -> list:
        """The SELECTs among the captured statements (not the savepoints and settings)."""
        return [
            q["sql"]
            for q in captured.captured_queries[start:end]
            if q["sql"].startswith("SELECT") and "current_setting(" not in q["sql"]
            and "set_config(" not in q["sql"]
        ]  # fmt: skip

    for name, qs in cases:
        query = BrowseQuery.from_querydict(project, QueryDict(qs))
        with CaptureQueriesContext(connection) as first:
            page = browse_page(project, query, limit=50)
        with CaptureQueriesContext(connection) as counted:
            count_matching(project, query)
        nxt = None
        if page.next_cursor:
            with CaptureQueriesContext(connection) as nxt:
                browse_page(project, query, after=page.next_cursor, limit=50)
        # browse_page: the id queries (one, or two when the valued part runs out; a text
        # search's look at its word first), then the rows: the items, six prefetches and the
        # leases.
        split = len(first.captured_queries) - (ROW_QUERIES if page.rows else 0)
        id_sqls = sqls(first, 0, split)
        ids = [run(sql) for sql in id_sqls]
        rows_ms = sum(run(sql)[0] for sql in sqls(first, split))
        nxt_ids = [run(sql) for sql in sqls(nxt, 0, -ROW_QUERIES)] if nxt else []
        count_sqls = sqls(counted)
        counts = [run(sql) for sql in count_sqls]
        table.append(
            f"| {name} (`{qs or '–'}`) | {cell(ids)} | {cell(nxt_ids)} | {rows_ms:.1f} "
            f"| {cell(counts)} |"
        )
        details.append(f"### {name}\n")
        for label, texts, runs in (("ids", id_sqls, ids), ("count", count_sqls, counts)):
            for sql, (_, plan) in zip(texts, runs, strict=True):
                details.append(f"{label}:\n```\n{sql[:600]}\n{plan}\n```\n")
        for _, plan in nxt_ids:
            details.append(f"next page ids:\n```\n{plan}\n```\n")
    return "\n".join(table) + "\n\n" + "\n".join(details)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = ni.base_env(args, secrets.token_urlsafe(48))
    ni.ensure_database(args.database_url)
    ni.migrate(env)
    ni.django_setup(env)
    from django.db import connection

    ni.prepare_users(ANNOTATORS)
    projects = {
        size: prepare(size, reload=args.reload, reseed=args.reseed) for size in args.size_list
    }
    if args.plans:
        largest = max(projects)
        text = f"# Data browser plans at {largest:,} items\n\n{explain(projects[largest])}\n"
        output = Path(args.output).with_name(Path(args.output).stem + "-plans.md")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(text.split("\n\n###", 1)[0] + f"\n\nwrote {output}")
        return 0
    connection.close()
    results = {}
    with ni.running_server("uvicorn", args.workers, env) as port:
        who = ni.login(port, REVIEWER)
        for size, pk in projects.items():
            print(f"{size:,} items:")
            results[size] = measure(port, pk, who, args)
    largest = max(projects)
    plans = explain(projects[largest])
    lines = ["| Items | Page | p50 ms | p95 ms | bytes |", "|---:|---|---:|---:|---:|"]
    for size, rows in results.items():
        lines += [f"| {size:,} | {n} | {a:.1f} | {b:.1f} | {c:,} |" for n, a, b, c in rows]
    worst = max(b for rows in results.values() for _, _, b, _ in rows)
    text = (
        "# Data browser latency\n\nWritten by `benchmarks/browse.py`; see `benchmarks/README.md`."
        f"\n{args.requests} requests per page, a fresh connection each, uvicorn with "
        f"{args.workers} workers.\n\n" + "\n".join(lines) + f"\n\nWorst p95: {worst:.1f} ms "
        f"(target < 100 ms at 1M items).\n\n## EXPLAIN ANALYZE at {largest:,} items\n\n{plans}\n"
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print("\n" + "\n".join(lines) + f"\n\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
