#!/usr/bin/env python
"""Latency of the data browser over HTTP at 10k–1M items: the first page, filtered pages
(status, gold label, text search, confidence range sorted by label-error score), the next page
of a sort and the API's first page, as a logged-in reviewer, against the production ASGI server
on PostgreSQL. Target: p95 under 100 ms at 1M items.

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
#: The pages measured: (name, path under /projects/<pk>/ or /api/projects/<pk>/, is_api).
PAGES = [
    ("first page", "data/", False),
    ("status = complete", "data/?status=complete", False),
    ("gold label = positive", "data/?gold=positive", False),
    ("text search", "data/?q=refund+battery", False),
    ("confidence 0.4–0.6, by label-error score", "data/?confidence_min=0.4&confidence_max=0.6"
     "&sort=-error", False),
    ("sort by outlier score, desc", "data/?sort=-outlier", False),
    ("metadata source = web", "data/?meta=source%3Dweb", False),
    ("API first page", "data/", True),
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
    p.add_argument("--output", default=str(ni.RESULTS / "browse.md"))
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    return args


def _tables() -> dict[str, str]:
    from annotations.models import GoldLabel, Item, Review
    from curation.dataset_models import (
        DuplicateGroup,
        ItemDuplicate,
        ItemOutlier,
        ItemPrediction,
        LabelIssue,
        PredictionChange,
    )

    models = (GoldLabel, Item, Review, DuplicateGroup, ItemDuplicate, ItemOutlier)
    models += (ItemPrediction, LabelIssue, PredictionChange)
    return {m.__name__: m._meta.db_table for m in models}


def delete_analyses(pk: int) -> None:
    from django.db import connection, transaction

    t = _tables()
    with transaction.atomic(), connection.cursor() as cur:
        for name in ("ItemDuplicate", "DuplicateGroup", "ItemOutlier", "LabelIssue"):
            cur.execute(f"DELETE FROM {t[name]} WHERE project_id = %s", [pk])
        for name in ("ItemPrediction", "PredictionChange", "GoldLabel", "Review"):
            cur.execute(f"DELETE FROM {t[name]} WHERE project_id = %s", [pk])


def seed_analyses(pk: int) -> float:
    """What the analyses and answers would have left, written in the database itself."""
    from django.db import connection, transaction

    t = _tables()
    started = time.perf_counter()
    classes = "(ARRAY['positive','negative','neutral'])[1 + (i.id %% 3)]"
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("SELECT setseed(0.42)")
        cur.execute(
            f"UPDATE {t['Item']} SET metadata = jsonb_build_object('source', "
            "(ARRAY['web','mail','app','shop','call'])[1 + (id %% 5)], 'batch', id %% 100), "
            "annotation_count = CASE WHEN id %% 10 < 3 THEN 2 WHEN id %% 10 = 3 THEN 1 ELSE 0 END, "
            "needs_annotation = NOT (id %% 10 < 3) WHERE project_id = %s",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['GoldLabel']} (item_id, project_id, labels, source, agreement, "
            f"answers, updated_at) SELECT i.id, i.project_id, jsonb_build_array({classes}), "
            "'majority', (ARRAY[0.5, 1.0])[1 + (i.id / 10 %% 2)], 2, now() "
            f"FROM {t['Item']} i WHERE i.project_id = %s AND i.id %% 10 < 3",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['ItemPrediction']} (item_id, project_id, labels, label, confidence, "
            f"version, updated_at) SELECT i.id, i.project_id, jsonb_build_array(c), c, "
            "0.34 + random() * 0.66, 7, now() FROM "
            f"(SELECT id, project_id, {classes} AS c FROM {t['Item']} i "
            "WHERE project_id = %s AND id %% 5 <> 4) i",
            [pk],
        )
        cur.execute(
            f"INSERT INTO {t['LabelIssue']} (item_id, project_id, gold, score, suggested, "
            "probabilities, status, updated_at) SELECT g.item_id, g.project_id, g.labels, "
            f"random(), 'negative', '{{}}', '', now() FROM {t['GoldLabel']} g "
            "WHERE g.project_id = %s",
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
        for name in ("Item", "GoldLabel", "ItemPrediction", "LabelIssue", "ItemOutlier"):
            cur.execute(f"VACUUM ANALYZE {t[name]}")
        cur.execute(f"VACUUM ANALYZE {t['ItemDuplicate']}")
    return time.perf_counter() - started


def prepare(size: int, *, reload: bool) -> int:
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
        print(f"{name}: wrote the analyses' rows in {seed_analyses(project.pk):.1f} s")
    else:
        print(f"{name}: reusing {size:,} items")
    user = get_user_model().objects.get(username=REVIEWER)
    Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": Membership.Role.REVIEWER}
    )
    return project.pk


_NEXT = re.compile(rb'id="next-page" href="([^"]+)"')


def measure(port: int, pk: int, who: ni.Annotator, args) -> list[tuple[str, float, float, int]]:
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
        times = []
        for i in range(args.warmup + args.requests):
            started = time.perf_counter()
            status, _, body = ni.request(port, "GET", url, None, who.headers())
            elapsed = (time.perf_counter() - started) * 1000
            if status != 200:
                raise SystemExit(f"GET {url}: HTTP {status}\n{body[:500]!r}")
            if i >= args.warmup:
                times.append(elapsed)
        p50, p95, _ = ni.percentiles(times)
        rows.append((name, p50, p95, len(body)))
        print(f"  {name:45} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms")
    return rows


def explain(pk: int) -> str:
    """EXPLAIN ANALYZE of the id query behind each page (the costly one)."""
    from django.db import connection
    from django.http import QueryDict
    from django.test.utils import CaptureQueriesContext

    from annotations.browse import BrowseQuery, browse_page, count_matching
    from annotations.models import Project

    project = Project.objects.get(pk=pk)
    out = []
    for name, path, api in PAGES:
        if api:
            continue
        qs = path.partition("?")[2]
        query = BrowseQuery.from_querydict(project, QueryDict(qs))
        with CaptureQueriesContext(connection) as captured:
            browse_page(project, query, limit=50)
            count_matching(project, query)
        out.append(f"### {name}\n")
        with connection.cursor() as cur:
            for q in captured.captured_queries:
                cur.execute(f"EXPLAIN (ANALYZE, BUFFERS OFF) {q['sql']}")
                plan = "\n".join(r[0] for r in cur.fetchall())
                out.append(f"```\n{q['sql'][:400]}\n{plan}\n```\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = ni.base_env(args, secrets.token_urlsafe(48))
    ni.ensure_database(args.database_url)
    ni.migrate(env)
    ni.django_setup(env)
    from django.db import connection

    ni.prepare_users(1)
    projects = {size: prepare(size, reload=args.reload) for size in args.size_list}
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
