#!/usr/bin/env python
"""Dataset versions at scale: how long saving a version takes, how big its file is, how long
the model on it, the exports and a diff take, and the process's peak memory, on the data
browser's benchmark projects (`benchmarks/browse.py`: 30% of the items with two answers and a
gold label) at 100k and 1M items, on PostgreSQL.

    python benchmarks/versions.py --sizes 10000      # proves it runs (~1 min)
    python benchmarks/versions.py                    # 100k and 1M: an idle machine, ~10 min

Each step runs in this process exactly as the training worker runs it (`version_build`,
`metrics_measure`) or as the commands do (`version_export`, `diff_of`). Between the two
versions 1% of the gold labels change class and 1,000 items are added. Results go to stdout and
--output (default benchmarks/results/versions.md).
"""

from __future__ import annotations

import argparse
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import browse  # noqa: E402
from benchmarks import next_item as ni  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_bench")
    p.add_argument("--redis-url", default="", help="'' for in-memory")
    p.add_argument("--sizes", default="100000,1000000", help="items per project, comma-separated")
    p.add_argument("--output", default=str(ni.RESULTS / "versions.md"))
    args = p.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s]
    return args


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(step):
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def change_some(pk: int, size: int) -> None:
    """1% of the gold labels to another class, and 1,000 new items."""
    from django.db import connection

    from annotations.models import Item, Project
    from annotations.services import add_items_counted

    t = browse._tables()
    with connection.cursor() as cur:
        cur.execute(
            f"UPDATE {t['GoldLabel']} SET labels = jsonb_build_array(CASE labels->>0 "
            "WHEN 'positive' THEN 'negative' WHEN 'negative' THEN 'neutral' ELSE 'positive' END)"
            ", source = 'adjudicated', updated_at = now() "
            "WHERE project_id = %s AND item_id %% 100 = 0",
            [pk],
        )
    items = Item.objects.bulk_create(
        Item(project_id=pk, external_id=f"added-{i}", text=f"an added review {i}")
        for i in range(1000)
    )
    add_items_counted(Project.objects.get(pk=pk), len(items))


def measure(pk: int, size: int) -> dict[str, float]:
    from annotations.models import Project
    from curation.dataset_versions import version_create, version_open
    from curation.version_diff import diff_compute
    from curation.version_exports import version_export
    from curation.version_metrics import metrics_measure

    project = Project.objects.get(pk=pk)
    stamp = secrets.token_hex(3)
    row: dict[str, float] = {}
    a, row["snapshot s"] = timed(lambda: version_create(project, name=f"bench-a-{stamp}"))
    row["file MB"] = a.file_size / 1e6
    row["labelled"] = a.labelled
    metrics, row["model s"] = timed(lambda: metrics_measure(a))
    row["model trained on"] = metrics.get("train", 0)
    header, rows = version_open(a)
    out = Path(tempfile.mkdtemp(prefix="bench-versions-"))
    try:
        _, row["jsonl export s"] = timed(
            lambda: version_export(
                header,
                rows,
                "jsonl",
                out / "v.jsonl",
                media_root=out,
                version_name=a.name,
                content_hash=a.content_hash,
            )
        )
        _, row["hf export s"] = timed(
            lambda: version_export(
                header,
                rows,
                "hf",
                out / "hf",
                media_root=out,
                version_name=a.name,
                content_hash=a.content_hash,
            )
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    change_some(pk, size)
    b, row["second snapshot s"] = timed(lambda: version_create(project, name=f"bench-b-{stamp}"))
    diff, row["diff s"] = timed(lambda: diff_compute(a, b))
    row["relabelled"] = diff["summary"]["relabelled"]
    row["added"] = diff["summary"]["added"]
    row["peak MiB"] = peak_mib()
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = ni.base_env(args, secrets.token_urlsafe(48))
    ni.ensure_database(args.database_url)
    ni.migrate(env)
    ni.django_setup(env)
    from django.conf import settings

    settings.DATA_DIR = Path(tempfile.mkdtemp(prefix="bench-versions-data-"))
    ni.prepare_users(browse.ANNOTATORS)
    results = {}
    try:
        for size in args.size_list:
            pk = browse.prepare(size, reload=False, reseed=True)
            print(f"{size:,} items:", flush=True)
            results[size] = measure(pk, size)
            print("  " + ", ".join(f"{k} {v:,.2f}" for k, v in results[size].items()), flush=True)
    finally:
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)
    columns = list(next(iter(results.values())))
    lines = ["| items | " + " | ".join(columns) + " |", "|---:|" + "---:|" * len(columns)]
    for size, row in results.items():
        cells = [
            f"{row[c]:,.0f}"
            if c in ("labelled", "relabelled", "added", "model trained on")
            else f"{row[c]:,.1f}"
            for c in columns
        ]
        lines.append(f"| {size:,} | " + " | ".join(cells) + " |")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    text = (
        "# Dataset versions\n\nWritten by `benchmarks/versions.py`; see `benchmarks/README.md`.\n"
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC{', commit ' + commit if commit else ''}; "
        "one process, as the training worker runs each step; PostgreSQL.\n\n"
        + "\n".join(lines)
        + "\n\nThe items are the data browser's benchmark projects: 30% with two "
        "answers and a gold label. Between the versions, 1% of the gold labels change class and "
        "1,000 items are added. Peak MiB: this process's maximum resident set so far.\n"
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print("\n" + "\n".join(lines) + f"\n\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
