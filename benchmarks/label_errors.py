#!/usr/bin/env python
"""Likely label errors: how many injected label errors the analysis finds, and what the job
costs at 1k, 10k and 100k labelled text items.

1. Quality. Uniform label noise (5%, 10%, 20%: that share of the items, drawn at random, get
   another class drawn uniformly) is put into the gold labels of data that ships offline:
   scikit-learn's 1,797 digits (as PNG images through the image featurizer, as the demo renders
   them) and the demo's 13k airline tweets (text). Then the label-error job runs through the
   app's code (`curation.jobs.analysis_run_inline`) and its flags (cleanlab's default
   decision) are scored against the flipped items: precision, recall, F1.
2. Cost. A text project of N items with a gold label each (the tweets repeated to reach N;
   each copy after the first gets a marker word, " cN", so copies are not identical rows),
   10% noise; the job runs in a fresh process, as a worker would: wall time, CPU time (user +
   system) and peak RSS (VmHWM) of that process, and its RSS before the job (Django, numpy,
   scikit-learn imported).

Gold labels are loaded as one answer per item through `annotations.gold.gold_rebuild`.
Targets: digits at 10% noise precision ≥ 0.7 and recall ≥ 0.7; the job at 100k labelled text
items under 60 s with the worker under 2 GB. On a shared machine the wall times are
inflated: read the CPU seconds too.

    python benchmarks/label_errors.py                       # everything (~10 min)
    python benchmarks/label_errors.py --sizes 1000 --rates 0.1 --datasets digits
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.label_efficiency import (  # noqa: E402
    Example,
    Split,
    django_setup,
    drop_databases,
    scratch_databases,
)

RATES = (0.05, 0.1, 0.2)
SIZES = (1_000, 10_000, 100_000)
TARGET_PRECISION = TARGET_RECALL = 0.7
TARGET_SECONDS = 60.0
TARGET_MIB = 2048


# --------------------------------------------------------------------------- data


def digits_examples() -> Split:
    """All 1,797 digits as PNG images (no held-out part: every item gets a gold label)."""
    from benchmarks.label_efficiency import _digits

    data, pngs = _digits()
    examples = [Example(f"digit-{i:04d}", pngs[i], str(int(t))) for i, t in enumerate(data.target)]
    return Split("digits", "image", tuple(str(d) for d in range(10)), examples, [])


def tweets_examples(size: int | None = None) -> Split:
    """The demo's airline tweets; `size` repeats them (copies marked " c<k>") to reach it."""
    from annotations.demo import TWEET_CLASSES, airline_tweets

    tweets = airline_tweets()
    size = len(tweets) if size is None else size
    examples = []
    for i in range(size):
        copy, tweet = divmod(i, len(tweets))
        text = tweets[tweet].text + (f" c{copy}" if copy else "")
        examples.append(Example(f"tweet-{i:07d}", text, tweets[tweet].label))
    return Split("tweets", "text", tuple(n for n, _ in TWEET_CLASSES), examples, [])


def inject_noise(
    truth: dict[int, str], classes: Sequence[str], rate: float, seed: int = 0
) -> tuple[dict[int, str], set[int]]:
    """(noisy labels, the items whose label was changed): `rate` of the items, drawn at
    random, get another class drawn uniformly."""
    rng = random.Random(seed)
    ids = sorted(truth)
    flipped = set(rng.sample(ids, round(rate * len(ids))))
    noisy = dict(truth)
    for item_id in flipped:
        noisy[item_id] = rng.choice([c for c in classes if c != truth[item_id]])
    return noisy, flipped


# --------------------------------------------------------------------------- the app's code


def build_project(split: Split, name: str) -> tuple[Any, dict[int, str]]:
    """`split.pool` as a project's items; (project, {item id: true label})."""
    from benchmarks.label_efficiency import create_project

    return create_project(split, name)


def label_items(project: Any, labels: dict[int, str], username: str = "bench-annotator") -> None:
    """One answer per item with the given label, and the gold labels derived from them."""
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from annotations.gold import gold_rebuild
    from annotations.models import Annotation, Item, Membership, Project

    user, _ = get_user_model().objects.get_or_create(username=username)
    Membership.objects.get_or_create(project=project, user=user)
    with transaction.atomic():
        Annotation.objects.bulk_create(
            (
                Annotation(project=project, item_id=item_id, annotator=user, labels=[label])
                for item_id, label in labels.items()
            ),
            batch_size=5000,
        )
        Item.objects.filter(pk__in=list(labels)).update(annotation_count=1)
        Project.objects.filter(pk=project.pk).update(complete_count=len(labels))
    gold_rebuild(project)


def flag_quality(project: Any, flipped: set[int]) -> dict[str, float]:
    """Precision, recall and F1 of the project's flags against the flipped items."""
    from curation.models import LabelIssue

    flagged = set(
        LabelIssue.objects.filter(project=project, status=LabelIssue.Status.FLAGGED).values_list(
            "item_id", flat=True
        )
    )
    hits = len(flagged & flipped)
    precision = hits / len(flagged) if flagged else 0.0
    recall = hits / len(flipped) if flipped else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"flagged": len(flagged), "noisy": len(flipped), "precision": precision,
            "recall": recall, "f1": f1}  # fmt: skip


def run_job(project: Any) -> Any:
    from curation.jobs import analysis_run_inline
    from curation.models import AnalysisRun

    return analysis_run_inline(project, AnalysisRun.Kind.LABEL_ERRORS)


# --------------------------------------------------------------------------- measurements


def quality_rows(datasets: Sequence[str], rates: Sequence[float]) -> list[dict[str, Any]]:
    rows = []
    for name in datasets:
        split = digits_examples() if name == "digits" else tweets_examples()
        for rate in rates:
            project, truth = build_project(split, f"noise-{name}-{rate}")
            noisy, flipped = inject_noise(truth, split.classes, rate)
            label_items(project, noisy)
            started = time.perf_counter()
            run = run_job(project)
            seconds = time.perf_counter() - started
            row = {"data": name, "items": len(truth), "rate": rate, "seconds": seconds,
                   **flag_quality(project, flipped), "summary": run.message}  # fmt: skip
            print(f"{name} {rate:.0%}: {row}", flush=True)
            rows.append(row)
    return rows


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child_job(project_pk: int, kind: str) -> None:
    """In a fresh process (the worker's stand-in): run the job, print its cost as JSON."""
    import curation.label_errors  # noqa: F401 - what a worker has imported before a job
    import curation.predictions  # noqa: F401
    from annotations.models import Project
    from curation.jobs import analysis_run_inline

    project = Project.objects.get(pk=project_pk)
    before = _status_kib("VmRSS")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    run = analysis_run_inline(project, kind)
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": usage.ru_utime + usage.ru_stime - cpu0,
                "rss_before_mib": before / 1024,
                "peak_mib": _status_kib("VmHWM") / 1024,
                "status": run.status,
                "summary": run.message,
                "error": run.error,
                "cpu_s": run.result.get("cpu_s", {}),
            }
        )
    )


def cost_rows(sizes: Sequence[int], database_url: str, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        split = tweets_examples(size)
        started = time.perf_counter()
        project, truth = build_project(split, f"cost-{size}")
        noisy, flipped = inject_noise(truth, split.classes, 0.1)
        label_items(project, noisy)
        setup = time.perf_counter() - started
        cost = in_fresh_process(project.pk, "label_errors", database_url, scratch)
        row = {"items": size, "setup": setup, **cost, **flag_quality(project, flipped)}
        print(f"{size}: {row}", flush=True)
        rows.append(row)
    return rows


def in_fresh_process(project_pk: int, kind: str, database_url: str, scratch: Path) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url}
    out = subprocess.run(
        [sys.executable, __file__, "--child-job", str(project_pk), "--kind", kind,
         "--scratch", str(scratch), "--database-url", database_url],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def prediction_rows(sizes: Sequence[int], database_url: str, scratch: Path) -> list[dict]:
    """Predictions for every item of a text project of N items, 10% of them labelled (the
    model trained once beforehand, untimed), in a fresh process."""
    from curation import trainer

    rows = []
    for size in sizes:
        split = tweets_examples(size)
        project, truth = build_project(split, f"predict-{size}")
        labelled = sorted(truth)[: max(30, size // 10)]
        label_items(project, {i: truth[i] for i in labelled})
        trainer.train(project.pk, announce=False)
        cost = in_fresh_process(project.pk, "predictions", database_url, scratch)
        row = {"items": size, "labels": len(labelled), **cost}
        print(f"predictions {size}: {row}", flush=True)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- report


def quality_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | items | noise | noisy | flagged | precision | recall | F1 | job s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['data']} | {r['items']:,} | {r['rate']:.0%} | {r['noisy']:,} | {r['flagged']:,} "
        f"| {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['seconds']:.1f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def cost_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| labelled text items | wall s | CPU s | worker RSS before MiB | worker peak MiB "
        "| precision | recall | CPU s by step | summary |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [
        f"| {r['items']:,} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_before_mib']:.0f} "
        f"| {r['peak_mib']:.0f} | {r['precision']:.3f} | {r['recall']:.3f} "
        f"| {', '.join(f'{k} {v}' for k, v in r.get('cpu_s', {}).items())} | {r['summary']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def prediction_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| items | labels | wall s | CPU s | worker RSS before MiB | worker peak MiB | summary |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['items']:,} | {r['labels']:,} | {r['wall']:.1f} | {r['cpu']:.1f} "
        f"| {r['rss_before_mib']:.0f} | {r['peak_mib']:.0f} | {r['summary']} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def verdicts(quality: list[dict[str, Any]], cost: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in quality:
        if r["data"] == "digits" and abs(r["rate"] - 0.1) < 1e-9:
            ok = r["precision"] >= TARGET_PRECISION and r["recall"] >= TARGET_RECALL
            out.append(
                f"{'PASS' if ok else 'FAIL'}: digits at 10% noise: precision "
                f"{r['precision']:.3f}, recall {r['recall']:.3f} (targets ≥ {TARGET_PRECISION})"
            )
    for r in cost:
        if r["items"] == 100_000:
            ok = r["wall"] < TARGET_SECONDS and r["peak_mib"] < TARGET_MIB
            out.append(
                f"{'PASS' if ok else 'FAIL'}: 100k labelled text items in {r['wall']:.1f} s "
                f"wall ({r['cpu']:.1f} s CPU), worker peak {r['peak_mib']:.0f} MiB "
                f"(targets < {TARGET_SECONDS:.0f} s, < {TARGET_MIB} MiB)"
            )
    return out


def machine_info() -> str:
    import platform

    import cleanlab
    import sklearn

    return (
        f"- {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"scikit-learn {sklearn.__version__}, cleanlab {cleanlab.__version__}\n"
        f"- load average before the run: {os.getloadavg()[0]:.1f}\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits,tweets")
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/dataprep_bench_label_errors",
        help="scratch PostgreSQL database (dropped and created afresh)",
    )
    parser.add_argument(
        "--prediction-sizes", default="100000", help="items for the predictions job ('' none)"
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/label_errors.md"))
    parser.add_argument("--child-job", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="label_errors", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_job:
        django_setup(Path(args.scratch), args.database_url)
        child_job(args.child_job, args.kind)
        return
    scratch = Path(tempfile.mkdtemp(prefix="bench-label-errors-"))
    [url] = scratch_databases(args.database_url, 1, scratch)
    django_setup(scratch, url)
    from threadpoolctl import threadpool_limits

    try:
        with threadpool_limits(1):  # as the worker runs
            datasets = [d for d in args.datasets.split(",") if d]
            quality = quality_rows(datasets, [float(r) for r in args.rates.split(",") if r])
        cost = cost_rows([int(s) for s in args.sizes.split(",") if s], url, scratch)
        sizes = [int(s) for s in args.prediction_sizes.split(",") if s]
        predicted = prediction_rows(sizes, url, scratch)
    finally:
        from django.db import connections

        connections.close_all()
        drop_databases([url])
    text = (
        "# Likely label errors\n\n"
        "Written by `benchmarks/label_errors.py` (see its docstring for the method).\n\n"
        + machine_info()
        + "\n## Injected noise found (flags at cleanlab's default threshold)\n\n"
        + quality_table(quality)
        + "\n## The job at 1k, 10k and 100k labelled text items (10% noise, fresh process)\n\n"
        + cost_table(cost)
        + "\n## Predictions for every item (10% labelled, fresh process)\n\n"
        + (prediction_table(predicted) if predicted else "Not run.\n")
        + "\n"
        + "\n".join(f"- {v}" for v in verdicts(quality, cost))
        + "\n"
    )
    print("\n" + text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
