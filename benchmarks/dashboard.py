#!/usr/bin/env python
"""The project dashboard over HTTP at 1M items and 1M answers: the page, each of its plots and
the API's dashboard, as a logged-in reviewer, against the production ASGI server (uvicorn, 2
workers) on PostgreSQL with a training worker running. Target: p95 under 300 ms.

    python benchmarks/dashboard.py --sizes 10000       # proves it runs (~1 min)
    python benchmarks/dashboard.py                     # 1M items: an idle machine, ~10 min

The project (bench-dashboard-<size>) is loaded with COPY like the other benchmarks, and what
labelling would have left is written with INSERT … SELECT (`benchmarks.browse.seed_analyses`:
two answers and a gold label for 30% of the items, one answer for 10%, reviews, label errors,
duplicates), plus one answer for another 30%: a million answers at 1M items, spread over the
last 14 days and five annotators. The aggregates are then built once as the worker builds them
(`dashboard_refresh`, timed: the first one reads every answer), and again after 1,000 new
answers (the incremental refresh the worker runs while people label). The project is marked
trained, so the worker does not spend the run fitting 300k labels. Results go to stdout and
--output (default benchmarks/results/dashboard.md).
"""

from __future__ import annotations

import argparse
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import browse  # noqa: E402
from benchmarks import next_item as ni  # noqa: E402
from benchmarks.processes import start_training_worker  # noqa: E402

PREFIX = "bench-dashboard-"
_PLOT = re.compile(rb'<img[^>]+src="(/projects/\d+/dashboard/[\w-]+\.svg)"')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_bench")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="'' for in-memory")
    p.add_argument("--sizes", default="1000000", help="items per project, comma-separated")
    p.add_argument("--requests", type=int, default=60, help="measured requests per URL")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    p.add_argument("--reload", action="store_true", help="load the projects again")
    p.add_argument("--output", default=str(ni.RESULTS / "dashboard.md"))
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    return args


def more_answers(pk: int, annotator_ids: list[int]) -> None:
    """One answer for a further 30% of the items (a million answers in all at 1M items), and
    every answer's time spread over the last 14 days."""
    from django.db import connection, transaction

    t = browse._tables()
    people = "ARRAY[" + ",".join(str(u) for u in annotator_ids) + "]::int[]"
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {t['Annotation']} (project_id, item_id, annotator_id, labels, skipped, "
            f"time_spent_ms, client_uuid, created_at, updated_at) SELECT i.project_id, i.id, "
            f"({people})[1 + ((i.id + 2) %% {len(annotator_ids)})], '[\"neutral\"]', false, "
            "1500, gen_random_uuid(), now(), now() "
            f"FROM {t['Item']} i WHERE i.project_id = %s AND i.id %% 10 IN (4, 5, 6)",
            [pk],
        )
        cur.execute(
            f"UPDATE {t['Item']} SET annotation_count = annotation_count + 1 "
            "WHERE project_id = %s AND id %% 10 IN (4, 5, 6)",
            [pk],
        )
        cur.execute(
            f"UPDATE {t['Annotation']} SET created_at = now() - (id %% 336) * interval '1 hour', "
            "updated_at = now() - (id %% 336) * interval '1 hour' WHERE project_id = %s",
            [pk],
        )
    with connection.cursor() as cur:
        cur.execute(f"VACUUM ANALYZE {t['Annotation']}")


def prepare(size: int, *, reload: bool) -> int:
    from django.contrib.auth import get_user_model
    from django.db.models import Max
    from django.utils import timezone

    from annotations.models import Annotation, GoldLabel, Membership, Project
    from annotations.services import project_create
    from curation.models import ProjectTraining

    name = f"{PREFIX}{size}"
    project = Project.objects.filter(name=name).first()
    if project is not None and (reload or project.item_count != size):
        browse.delete_analyses(project.pk)
        ni.delete_project(project.pk)
        project = None
    users = get_user_model().objects.filter(username__startswith=ni.USER_PREFIX).order_by("pk")
    annotators = list(users.values_list("pk", flat=True))
    if project is None:
        project = project_create(name=name, classes=ni.CLASSES)
        print(f"{name}: loaded {size:,} items in {ni.load_items(project.pk, size):.1f} s")
        seconds = browse.seed_analyses(project.pk, annotators)
        more_answers(project.pk, annotators)
        print(f"{name}: wrote the answers' and analyses' rows in {seconds:.1f} s")
    else:
        print(f"{name}: reusing {size:,} items")
    last_gold = GoldLabel.objects.filter(project=project).aggregate(m=Max("updated_at"))["m"]
    ProjectTraining.objects.update_or_create(
        project=project,
        defaults={"labels_until": last_gold or timezone.now(), "trained_at": timezone.now()},
    )
    ni.settle_item_analyses(project.pk)
    user = get_user_model().objects.get(username=browse.REVIEWER)
    Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": Membership.Role.REVIEWER}
    )
    answers = Annotation.objects.filter(project=project).count()
    print(f"{name}: {answers:,} answers")
    return project.pk


def refresh_times(pk: int, annotator_ids: list[int]) -> tuple[float, float]:
    """Seconds of the first refresh (every answer) and of one after 1,000 new answers."""
    from annotations.models import Project
    from curation.dashboard import dashboard_refresh
    from curation.dashboard_models import AnnotatorHour, DashboardState, ProjectStatsPoint

    project = Project.objects.get(pk=pk)
    for model in (AnnotatorHour, ProjectStatsPoint, DashboardState):
        model.objects.filter(project=project).delete()
    started = time.perf_counter()
    dashboard_refresh(project)
    first = time.perf_counter() - started
    _answer_a_thousand(pk, annotator_ids)
    started = time.perf_counter()
    dashboard_refresh(project)
    return first, time.perf_counter() - started


def _answer_a_thousand(pk: int, annotator_ids: list[int]) -> None:
    from django.db import connection

    t = browse._tables()
    with connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {t['Annotation']} (project_id, item_id, annotator_id, labels, skipped, "
            f"time_spent_ms, client_uuid, created_at, updated_at) SELECT i.project_id, i.id, "
            f"{annotator_ids[-1]}, '[\"positive\"]', false, 900, gen_random_uuid(), now(), now() "
            f"FROM {t['Item']} i WHERE i.project_id = %s AND i.id %% 10 = 9 AND NOT EXISTS "
            f"(SELECT 1 FROM {t['Annotation']} a WHERE a.item_id = i.id) ORDER BY i.id LIMIT 1000",
            [pk],
        )


def measure(port: int, pk: int, who: ni.Annotator, args) -> list[tuple[str, float, float, int]]:
    """The page, then each plot it shows (as the browser fetches them), then the API."""
    rows = []
    p50, p95, size, body = browse._timed(port, f"/projects/{pk}/", who.headers(), args)
    rows.append(("dashboard page", p50, p95, size))
    plots = [m.decode() for m in _PLOT.findall(body)]
    if not plots:
        raise SystemExit("the dashboard page shows no plots: was the worker's refresh done?")
    for url in plots:
        p50, p95, size, _ = browse._timed(port, url, who.headers(), args)
        rows.append((f"plot {url.rsplit('/', 1)[-1]}", p50, p95, size))
    p50, p95, size, _ = browse._timed(port, f"/api/projects/{pk}/dashboard/", who.headers(), args)
    rows.append(("API dashboard", p50, p95, size))
    for name, a, b, _ in rows:
        print(f"  {name:40} p50 {a:7.1f} ms  p95 {b:7.1f} ms")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = ni.base_env(args, secrets.token_urlsafe(48))
    ni.ensure_database(args.database_url)
    ni.migrate(env)
    ni.django_setup(env)
    from django.contrib.auth import get_user_model
    from django.db import connection

    ni.prepare_users(browse.ANNOTATORS)
    annotators = list(
        get_user_model()
        .objects.filter(username__startswith=ni.USER_PREFIX)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    projects = {size: prepare(size, reload=args.reload) for size in args.size_list}
    refreshes = {}
    for size, pk in projects.items():
        refreshes[size] = refresh_times(pk, annotators)
        print(f"{size:,} items: first refresh {refreshes[size][0]:.1f} s, after 1,000 answers "
              f"{refreshes[size][1]:.2f} s")  # fmt: skip
    connection.close()
    results = {}
    worker = start_training_worker(env)
    try:
        with ni.running_server("uvicorn", args.workers, env) as port:
            who = ni.login(port, browse.REVIEWER)
            for size, pk in projects.items():
                print(f"{size:,} items:")
                results[size] = measure(port, pk, who, args)
        worker_mib = worker.peak_rss_mib()
    finally:
        worker.stop()
    lines = ["| items | request | p50 ms | p95 ms | bytes |", "|---:|---|---:|---:|---:|"]
    for size, rows in results.items():
        lines += [f"| {size:,} | {n} | {a:.1f} | {b:.1f} | {c:,} |" for n, a, b, c in rows]
    worst = max(b for rows in results.values() for _, _, b, _ in rows)
    refresh_lines = [
        "| items | first refresh s | refresh after 1,000 answers s |",
        "|---:|---:|---:|",
    ]
    refresh_lines += [f"| {s:,} | {a:.1f} | {b:.2f} |" for s, (a, b) in refreshes.items()]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    text = (
        "# Project dashboard latency\n\nWritten by `benchmarks/dashboard.py`; see "
        f"`benchmarks/README.md`.\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}; "
        f"{args.requests} requests per URL after {args.warmup} warm-up, a fresh connection "
        f"each, uvicorn with {args.workers} workers, a training worker running (peak "
        f"{worker_mib or 0:.0f} MiB).\n\n" + "\n".join(lines) + f"\n\nWorst p95: {worst:.1f} ms "
        "(target < 300 ms at 1M items and 1M answers).\n\n## Building the aggregates (the "
        "worker's job)\n\n" + "\n".join(refresh_lines) + "\n"
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print("\n" + "\n".join(lines) + "\n\n" + "\n".join(refresh_lines) + f"\n\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
