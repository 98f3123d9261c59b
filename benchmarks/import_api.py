#!/usr/bin/env python
"""Bulk import over the API: one request carrying `--size` items (default 100,000), streamed as
the request body to `POST /api/projects/<id>/items/import/`, against the production ASGI server
(uvicorn, 2 workers) on PostgreSQL with a training worker beside it, as the README's production
section runs it.

    python benchmarks/import_api.py                       # 100k items: JSONL, then Label Studio
    python benchmarks/import_api.py --size 20000 --formats jsonl

Each format gets a new project, a fresh server and a file written beforehand: JSON Lines of
`{"id", "text", "prediction", "vector"}` (a prediction and a 16-value vector per item, so the
predictions and vectors are stored at that scale too) and a Label Studio JSON export (an array
of tasks, a prediction each). The client streams the file from disk with an API token. Reported:
wall time of the request, items per second, the file's size, and the server workers' peak
resident memory (VmHWM) before and after: the upload is spooled to a temporary file and read a
chunk at a time, so the peak should not grow with the file. The items, predictions and vectors
stored are counted in the database afterwards.

Results go to stdout and benchmarks/results/import_api.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import processes  # noqa: E402
from benchmarks.next_item import (  # noqa: E402
    base_env,
    django_setup,
    ensure_database,
    migrate,
    request,
    running_server,
)

RESULTS = Path(__file__).resolve().parent / "results"
PASSWORD = "bench-" + secrets.token_hex(8)
USERNAME = "bench-importer"
CLASSES = ["positive", "negative", "neutral"]
DIM = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/dataprep_import")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    p.add_argument("--size", type=int, default=100_000, help="items in the one request")
    p.add_argument("--formats", default="jsonl,labelstudio", help="jsonl and/or labelstudio")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--output", default=str(RESULTS / "import_api.md"))
    args = p.parse_args(argv)
    args.format_list = [f.strip() for f in args.formats.split(",") if f.strip()]
    for fmt in args.format_list:
        if fmt not in ("jsonl", "labelstudio"):
            p.error(f"--formats: unknown format {fmt!r}")
    return args


def texts(n: int) -> list[str]:
    from annotations.demo import airline_tweets

    pool = [t.text for t in airline_tweets()]
    return [f"{pool[i % len(pool)]} (#{i})" for i in range(n)]


def write_file(fmt: str, n: int, folder: Path) -> Path:
    rng = random.Random(7)
    rows = texts(n)
    if fmt == "jsonl":
        path = folder / "items.jsonl"
        with path.open("w") as out:
            for i, text in enumerate(rows):
                p = rng.random()
                record = {
                    "id": f"i{i}",
                    "text": text,
                    "prediction": {
                        "model": "bench-model",
                        "scores": {"positive": p, "negative": 1 - p},
                    },
                    "vector": [round(rng.gauss(0, 1), 4) for _ in range(DIM)],
                }
                out.write(json.dumps(record) + "\n")
        return path
    path = folder / "tasks.json"
    with path.open("w") as out:
        out.write("[")
        for i, text in enumerate(rows):
            task = {
                "id": i + 1,
                "data": {"text": text},
                "annotations": [],
                "predictions": [
                    {
                        "model_version": "bench-model",
                        "score": round(rng.random(), 4),
                        "result": [
                            {
                                "from_name": "sentiment",
                                "to_name": "text",
                                "type": "choices",
                                "value": {"choices": [rng.choice(CLASSES)]},
                            }
                        ],
                    }
                ],
            }
            out.write(("," if i else "") + json.dumps(task))
        out.write("]")
    return path


def prepare(fmt: str) -> int:
    from django.contrib.auth import get_user_model

    from annotations.models import Project
    from annotations.services import project_create

    user, _ = get_user_model().objects.update_or_create(
        username=USERNAME, defaults={"is_superuser": True, "is_staff": True, "is_active": True}
    )
    user.set_password(PASSWORD)
    user.save()
    name = f"bench-import-{fmt}"
    Project.objects.filter(name=name).delete()
    return project_create(name=name, classes=CLASSES).pk


def token(port: int) -> str:
    body = urlencode({"username": USERNAME, "password": PASSWORD})
    status, _, data = request(
        port,
        "POST",
        "/api/auth/token/",
        body,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        raise SystemExit(f"token: HTTP {status} {data[:200]!r}")
    return json.loads(data)["token"]


def upload(port: int, key: str, project: int, fmt: str, path: Path) -> tuple[int, bytes, float]:
    query = urlencode({"fmt": fmt, "filename": path.name})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800)
    started = time.perf_counter()
    with path.open("rb") as body:
        conn.request(
            "POST",
            f"/api/projects/{project}/items/import/?{query}",
            body=body,
            headers={
                "Authorization": f"Token {key}",
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
        )
        resp = conn.getresponse()
        data = resp.read()
    elapsed = time.perf_counter() - started
    conn.close()
    return resp.status, data, elapsed


def stored(project: int) -> tuple[int, int, int]:
    from annotations.models import Item, ItemVector, PreAnnotation

    return (
        Item.objects.filter(project_id=project).count(),
        PreAnnotation.objects.filter(project_id=project).count(),
        ItemVector.objects.filter(project_id=project).count(),
    )


def workers_peak(root: int) -> float:
    peaks = [
        processes.peak_rss_mib(pid) or 0.0
        for role, pid, _ in processes.server_memory(root)
        if role == "server worker"
    ]
    return max(peaks, default=0.0)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ensure_database(args.database_url)
    env = base_env(args, secrets.token_urlsafe(40))
    env["IMPORT_MAX_UPLOAD_BYTES"] = str(200 * 1024 * 1024)
    migrate(env)
    django_setup(env)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        for fmt in args.format_list:
            path = write_file(fmt, args.size, Path(tmp))
            project = prepare(fmt)
            pids: list[int] = []
            worker = processes.start_training_worker(env)
            try:
                with running_server("uvicorn", args.workers, env, pids) as port:
                    key = token(port)
                    before = workers_peak(pids[0])
                    status, data, elapsed = upload(port, key, project, fmt, path)
                    after = workers_peak(pids[0])
            finally:
                worker.stop()
            if status != 201:
                raise SystemExit(f"{fmt}: HTTP {status}: {data[:500]!r}")
            items, predictions, vectors = stored(project)
            rows.append(
                (fmt, args.size, path.stat().st_size / 2**20, elapsed, items, predictions,
                 vectors, before, after)
            )  # fmt: skip
            print(f"{fmt}: {items:,} items in {elapsed:.1f} s", flush=True)
    lines = [
        f"# Import over the API ({datetime.now(UTC):%Y-%m-%d}, commit {commit}, "
        f"{os.cpu_count()} cores; uvicorn {args.workers} workers, PostgreSQL, a training worker)",
        "",
        "| format | items sent | file | request | items/s | stored items / predictions / "
        "vectors | server worker peak RSS before → after |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for fmt, n, mib, secs, items, preds, vecs, before, after in rows:
        lines.append(
            f"| {fmt} | {n:,} | {mib:.1f} MiB | {secs:.1f} s | {n / secs:,.0f} | "
            f"{items:,} / {preds:,} / {vecs:,} | {before:.0f} → {after:.0f} MiB |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.output).write_text(report)


if __name__ == "__main__":
    main()
