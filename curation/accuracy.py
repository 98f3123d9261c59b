"""Accuracy on the evaluation slice with its confidence interval: what the annotate page, the
admin and the model's announcements show. Plain arithmetic and one query, apart from the model
machinery (`curation.evaluation`), so that the web processes read it without loading it."""

from __future__ import annotations

import math
from typing import Any

from django.db.models import Count, Q

from annotations.models import Project
from curation.models import EvalSample

__all__ = ["eval_summary", "wilson_interval"]


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for an accuracy of correct/total (default 95%).

    Used for the test-then-train evaluation slice: unlike the normal approximation it stays inside
    [0, 1] and is sensible at the small counts a fresh project has. No trials gives (0, 1).
    """
    if total < 0 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total; got correct={correct}, total={total}")
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    z2 = z * z
    denom = 1.0 + z2 / total
    center = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    # Exact at the ends: floating point left 1.0 out of the interval of 47 correct out of 47.
    low = 0.0 if correct == 0 else max(0.0, center - half)
    high = 1.0 if correct == total else min(1.0, center + half)
    return low, high


def eval_summary(project: Project) -> dict[str, Any]:
    """Accuracy on the resolved evaluation items, with its 95% Wilson interval."""
    row = EvalSample.objects.filter(project=project, resolved_at__isnull=False).aggregate(
        total=Count("id"), correct=Count("id", filter=Q(correct=True))
    )
    total, correct = row["total"], row["correct"]
    low, high = wilson_interval(correct, total)
    return {
        "total": total,
        "correct": correct,
        "accuracy": correct / total if total else None,
        "low": low if total else None,
        "high": high if total else None,
    }
