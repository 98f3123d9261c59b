#!/usr/bin/env python
"""Agreement over many annotations: how long `curation.agreement` takes for a project's report.

Synthetic but realistic answers: `--annotations` answers from `--annotators` annotators, three
per item, five classes, each annotator right with probability 0.8 (else a random class). Times
building the ratings matrix and each coefficient, best of `--repeat` runs, and prints a table.
Target (issue 4): agreement over 100k annotations in under 1 s.

    python benchmarks/agreement.py
    python benchmarks/agreement.py --annotations 1000000 --annotators 50
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from curation.agreement import (
    Ratings,
    annotator_confusion,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappa,
    percent_agreement,
)

CLASSES = ["a", "b", "c", "d", "e"]


def answers(n: int, annotators: int, seed: int = 0) -> list[tuple[int, int, str]]:
    rng = np.random.default_rng(seed)
    items = n // 3
    truth = rng.integers(0, len(CLASSES), items)
    out = []
    for item in range(items):
        for annotator in rng.choice(annotators, 3, replace=False):
            label = truth[item] if rng.random() < 0.8 else rng.integers(0, len(CLASSES))
            out.append((item, int(annotator), CLASSES[label]))
    return out


def best(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = answers(args.annotations, args.annotators)
    ratings = Ratings.from_answers(rows, CLASSES)
    steps = {
        "ratings matrix from answers": lambda: Ratings.from_answers(rows, CLASSES),
        "percent agreement": lambda: percent_agreement(ratings),
        f"Cohen's kappa, all {args.annotators * (args.annotators - 1) // 2} pairs": lambda: (
            pairwise_cohen_kappa(ratings)
        ),
        "Fleiss' kappa": lambda: fleiss_kappa(ratings),
        "Krippendorff's alpha": lambda: krippendorff_alpha(ratings),
        "confusion between annotators": lambda: annotator_confusion(ratings),
    }
    timings = {name: best(step, args.repeat) for name, step in steps.items()}
    print(f"\n{len(rows):,} annotations, {args.annotators} annotators, {len(CLASSES)} classes\n")
    print("| step | ms |\n|---|---:|")
    for name, ms in timings.items():
        print(f"| {name} | {ms:.1f} |")
    total = sum(timings.values())
    print(f"| **all** | **{total:.1f}** |\n")
    print(f"target < 1 s: {'PASS' if total < 1000 else 'FAIL'}")


if __name__ == "__main__":
    main()
