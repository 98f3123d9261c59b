"""A project's dataset versions as the page, the API and the dashboard show them: counts,
the model's metrics, and how the accuracy moved from the previous measured version."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from annotations.models import Project
from curation.version_models import DatasetVersion

__all__ = ["STORED_FIELDS", "version_summary", "versions_listed"]

PENDING = (DatasetVersion.Status.QUEUED, DatasetVersion.Status.BUILDING)
#: What a listed version carries from its row (besides its author's name).
STORED_FIELDS = (
    "number",
    "name",
    "note",
    "trigger",
    "status",
    "error",
    "created_at",
    "finished_at",
    "content_hash",
    "file_size",
    "items",
    "labelled",
    "answers",
    "class_counts",
    "split_counts",
    "metrics_status",
    "metrics",
)


def versions_listed(project: Project) -> list[dict[str, Any]]:
    """Every version of `project`, newest first, each with `accuracy_change`: its accuracy
    minus that of the newest older version that has one (None when either has none)."""
    username = f"author__{get_user_model().USERNAME_FIELD}"
    rows = list(
        DatasetVersion.objects.filter(project=project)
        .order_by("number")
        .values(*STORED_FIELDS, username)
    )
    listed, previous = [], None
    for row in rows:
        summary = version_summary(row, author=row.pop(username))
        accuracy = summary["accuracy"]
        summary["accuracy_change"] = (
            accuracy - previous if accuracy is not None and previous is not None else None
        )
        if accuracy is not None:
            previous = accuracy
        listed.append(summary)
    return listed[::-1]


def version_summary(row: dict[str, Any], *, author: str | None) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    interval = metrics.get("accuracy_interval") or [None, None]
    splits = row.get("split_counts") or {}
    return {
        **{k: row[k] for k in row if k not in ("metrics",)},
        "author": author,
        "pending": row["status"] in PENDING,
        "ready": row["status"] == DatasetVersion.Status.READY,
        "accuracy": metrics.get("accuracy"),
        "accuracy_low": interval[0],
        "accuracy_high": interval[1],
        "f1_macro": metrics.get("f1_macro"),
        "metrics": metrics,
        "train": (splits.get("train") or {}).get("labelled", 0),
        "validation": (splits.get("validation") or {}).get("labelled", 0),
        "test": (splits.get("test") or {}).get("labelled", 0),
    }
