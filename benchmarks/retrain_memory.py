#!/usr/bin/env python
"""The training worker's memory over a long run: `--labels` labels (default 10,000), each
trained by one external `manage.py trainworker`, on a project of `--size` tweets (default 100k).

    python benchmarks/retrain_memory.py                       # 10,000 labels at 100k items
    python benchmarks/retrain_memory.py --labels 2000 --every 200   # a shorter look

Set up like `benchmarks/retrain_latency.py` (scratch database recreated, the demo's tweets
COPYed, Redis db flushed, production settings with DEBUG off, the worker a subprocess; the
annotator labels in this process exactly as the annotate view does and waits for each label's
announcement on the project's websocket, so every label is one training run, the worst case).
Every `--every` labels it reads the worker's VmRSS and VmHWM (/proc/<pid>/status) and reports
them with the worker's CPU time and the commit → announcement latency of that stretch.

Flat means no growth trend after warm-up beyond what the labels themselves need: the worker
keeps every labelled item's feature row (the learner refits on all of them), so its memory
grows by about that, a few MiB per 1,000 labels; the slope over the second half of the run is
in the report, next to the labelled rows' own size.

Results go to stdout and benchmarks/results/retrain_memory.md.
"""

from __future__ import annotations

import argparse
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.next_item import base_env, django_setup, percentiles, running_server  # noqa: E402
from benchmarks.retrain_latency import (  # noqa: E402
    Annotator,
    _flush_redis,
    label_and_wait,
    layer_redis_url,
    listening,
    migrate,
    prepare_project,
    recreate_database,
    scratch_run,
    start_worker,
    websocket_ready,
    write_report,
)

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 1024**2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/dataprep_memory_bench",
        help="scratch PostgreSQL database: DROPPED and created again",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed first")
    p.add_argument("--size", type=int, default=100_000, help="items in the project")
    p.add_argument("--labels", type=int, default=10_000, help="labels, one training run each")
    p.add_argument("--every", type=int, default=1_000, help="labels between two memory readings")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait per announcement")
    p.add_argument("--keep-db", action="store_true")
    p.add_argument("--output", default=str(RESULTS / "retrain_memory.md"))
    args = p.parse_args(argv)
    if args.labels > args.size // 2:
        p.error("--labels: keep it at most half of --size, so the queue never runs dry")
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        p.error("--database-url: it is dropped and created again; name a *bench* database")
    args.layer_redis_url, _ = layer_redis_url(args.redis_url)
    args.worker_env, args.worker_env_dict = [], {}
    return args


@dataclass
class Reading:
    labels: int
    rss: int
    hwm: int
    cpu_ms: float  # median worker CPU per label over the stretch
    p50_ms: float  # commit → announcement over the stretch
    seconds: float  # since the first label


def _status(pid: int) -> tuple[int, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in {"VmRSS", "VmHWM"}:
            values[name] = int(rest.split()[0]) * 1024
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def slope_mib_per_1000(readings: list[Reading]) -> float | None:
    """Least-squares RSS growth over the second half of the readings, MiB per 1,000 labels."""
    half = readings[len(readings) // 2 :]
    if len(half) < 2:
        return None
    xs = [r.labels for r in half]
    ys = [r.rss / MIB for r in half]
    return statistics.linear_regression(xs, ys).slope * 1000


def run(args: argparse.Namespace) -> tuple[list[Reading], int]:
    from annotations.demo import airline_tweets

    tweets = list(airline_tweets())
    random.Random(2015).shuffle(tweets)
    texts = [t.text for t in tweets]
    truth = {t.text: t.label for t in tweets}
    recreate_database(args.database_url)
    migrate(args.env)
    pk, seconds = prepare_project(args.size, texts)
    print(f"{args.size:,} items loaded in {seconds:.1f} s")
    _flush_redis(args.redis_url)
    annotator = Annotator(pk, truth)
    via = "websocket" if websocket_ready() else "group"
    readings: list[Reading] = []
    worker = start_worker(args.env, args)
    started = time.monotonic()
    try:
        with (
            running_server("uvicorn", 1, args.env) as port,
            listening(via, port, args, pk) as listener,
        ):
            cpu, latency = [], []
            for n in range(1, args.labels + 1):
                label = label_and_wait(annotator, listener, worker, "long", args.timeout)
                cpu.append(label.cpu_ms)
                latency.append(label.ms)
                if n == 1 or n % args.every == 0 or n == args.labels:
                    rss, hwm = _status(worker.proc.pid)
                    p50 = percentiles(latency)[0]
                    reading = Reading(
                        n, rss, hwm, statistics.median(cpu), p50, time.monotonic() - started
                    )
                    readings.append(reading)
                    print(
                        f"  {n:>6,} labels: RSS {rss / MIB:,.0f} MiB (peak {hwm / MIB:,.0f}), "
                        f"worker CPU p50 {reading.cpu_ms:.0f} ms/label, commit → announced "
                        f"p50 {p50:.0f} ms, {reading.seconds:,.0f} s",
                        flush=True,
                    )
                    cpu, latency = [], []
    finally:
        worker.stop()
    return readings, annotator.project.pk


def report(args: argparse.Namespace, readings: list[Reading], rows_mib: float | None) -> str:
    slope = slope_mib_per_1000(readings)
    table = (
        "| labels | worker RSS | peak (VmHWM) | worker CPU per label p50 | commit → announced p50 "
        "| elapsed |\n|---:|---:|---:|---:|---:|---:|\n"
    )
    for r in readings:
        table += (
            f"| {r.labels:,} | {r.rss / MIB:,.0f} MiB | {r.hwm / MIB:,.0f} MiB | {r.cpu_ms:.0f} ms "
            f"| {r.p50_ms:.0f} ms | {r.seconds / 60:.1f} min |\n"
        )
    return (
        "# Training worker memory over a long run\n\n"
        "Written by `benchmarks/retrain_memory.py` (see its docstring for the method).\n\n"
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- {args.size:,} tweets, {args.labels:,} labels, one training run per label; the "
        "worker's CPU per label and latency are medians over the labels since the previous "
        "row (10 ms ticks)\n\n"
        + table
        + "\nRSS growth over the second half of the run: "
        + ("–" if slope is None else f"{slope:.1f} MiB per 1,000 labels")
        + "; the labelled rows the worker keeps for refitting: "
        + ("–" if rows_mib is None else f"{rows_mib:.1f} MiB at the end")
        + ".\n"
    )


def labelled_rows_mib(project_pk: int) -> float | None:
    """Bytes of the labelled items' feature rows (what the worker's state must hold)."""
    from annotations.models import GoldLabel, Project
    from curation.features import item_features
    from curation.featurizers import featurizer_for

    project = Project.objects.get(pk=project_pk)
    ids = list(
        GoldLabel.objects.filter(project=project, labels__isnull=False).values_list(
            "item_id", flat=True
        )
    )
    if not ids:
        return None
    X, _ = item_features(project, featurizer_for(project.item_kind), ids)
    size = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    # The worker keeps one 1-row CSR matrix per label (~100 bytes of overhead each) and the
    # learner's stacked copy.
    return (2 * size + 100 * len(ids)) / MIB


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    # A SIGTERM (`timeout`, a CI limit) unwinds like Ctrl-C, so the worker and the server
    # subprocesses are stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data_dir = tempfile.mkdtemp(prefix="retrain-memory-data-")
    args.env = base_env(args, secrets.token_urlsafe(48))
    args.env.update(
        DATA_DIR=data_dir, TRAINING_WORKER="external", REDIS_URL=args.layer_redis_url, DEBUG="0"
    )
    django_setup(args.env)
    with scratch_run(args, data_dir):
        readings, pk = run(args)
        text = report(args, readings, labelled_rows_mib(pk))
    write_report(text, args.output, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
