"""Runs of the data analyses (predictions for every item, likely label errors, duplicates,
outliers): asked for by a person or found due, run one at a time by a training worker.

The web side only writes a queued `AnalysisRun` row and wakes a worker, so it imports none of
the training machinery; the row is the request, so a wake-up lost with Redis is found by the
worker's next sweep. A worker claims a run by moving it to "running" and reports progress on
the row and to the project's websocket group; a run whose worker died is noticed by its stale
heartbeat and queued again.

Each analysis is a module with `is_due(project, last_run) -> bool` (automatic runs) and
`run(project, run, report) -> dict` (the summary stored on the row); `ANALYSES` names them, so
the worker imports them only when it runs one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotations.events import project_group, publish
from annotations.models import Project
from curation.dataset_models import AnalysisRun
from curation.models import ProjectTraining
from curation.training_requests import send_to_worker

__all__ = [
    "ANALYSES",
    "ANALYSIS",
    "Reporter",
    "analysis_growth",
    "items_grew",
    "latest_runs",
    "resting_kinds",
    "run_claim",
    "run_event",
    "run_finish",
    "run_request",
    "run_requeue",
    "runs_requeue_stale",
]

#: The message that wakes a worker to run a project's queued or due analyses.
ANALYSIS = "training.analysis"

#: Kind → the module that implements it (imported by the worker only).
ANALYSES: dict[str, str] = {
    AnalysisRun.Kind.PREDICTIONS: "curation.predictions",
    AnalysisRun.Kind.LABEL_ERRORS: "curation.label_errors",
    AnalysisRun.Kind.DUPLICATES: "curation.duplicates",
    AnalysisRun.Kind.OUTLIERS: "curation.outliers",
}

#: A running run whose progress has not moved for this long lost its worker.
STALE_AFTER = timedelta(minutes=10)
#: Progress is written and announced at most this often (seconds).
REPORT_EVERY = 0.5

ACTIVE = (AnalysisRun.Status.QUEUED, AnalysisRun.Status.RUNNING)


def run_request(*, project: Project, kind: str, user=None) -> AnalysisRun:
    """Queue a run of `kind` for `project` (or return the one already queued or running) and
    wake a worker once the row is committed."""
    if kind not in ANALYSES:
        raise ValueError(f"unknown analysis {kind!r}; one of {', '.join(ANALYSES)}")
    with transaction.atomic():
        run = AnalysisRun.objects.filter(project=project, kind=kind, status__in=ACTIVE).first()
        if run is None:
            try:
                with transaction.atomic():
                    run = AnalysisRun.objects.create(
                        project=project, kind=kind, requested_by=user, message="Queued"
                    )
            except IntegrityError:  # another request queued it meanwhile
                run = AnalysisRun.objects.get(project=project, kind=kind, status__in=ACTIVE)
        transaction.on_commit(lambda: wake(project.pk))
    return run


def wake(project_id: int) -> bool:
    """Ask a worker to look at `project_id`'s analyses (False when the layer is down; the
    worker's sweep finds the queued row anyway)."""
    return send_to_worker({"type": ANALYSIS, "project_id": int(project_id)})


def latest_runs(project: Project) -> dict[str, AnalysisRun]:
    """The newest run of each kind, for the pages (kinds never run are absent)."""
    latest: dict[str, AnalysisRun] = {}
    for kind in ANALYSES:
        run = AnalysisRun.objects.filter(project=project, kind=kind).order_by("-id").first()
        if run is not None:
            latest[kind] = run
    return latest


def last_done(project: Project, kind: str) -> AnalysisRun | None:
    """The newest finished run of `kind` (what `is_due` compares against)."""
    return (
        AnalysisRun.objects.filter(project=project, kind=kind, status=AnalysisRun.Status.DONE)
        .order_by("-id")
        .first()
    )


def resting_kinds(project: Project) -> set[str]:
    """The kinds whose last run ended less than `ANALYSIS_INTERVAL_SECONDS` ago (done or
    failed): automatic runs wait that long, so a team's labels do not start one every few
    minutes and a failing analysis is not retried on every label. One query."""
    since = timezone.now() - timedelta(seconds=settings.ANALYSIS_INTERVAL_SECONDS)
    return set(
        AnalysisRun.objects.filter(project=project, finished_at__gt=since)
        .values_list("kind", flat=True)
        .distinct()
    )


def analysis_growth(project: Project) -> float:
    """The share by which the data must grow before an analysis is due again (a project
    setting, `ProjectTraining.analysis_growth`; 0.25 before the project has that row)."""
    growth = (
        ProjectTraining.objects.filter(project=project)
        .values_list("analysis_growth", flat=True)
        .first()
    )
    return 0.25 if growth is None else growth


def items_grew(project: Project, last_run: AnalysisRun | None, minimum: int) -> bool:
    """`is_due` of the analyses that read every item: once the project has `minimum` items,
    then again when they grew by the project's `analysis_growth` share since `last_run`."""
    count = project.item_count
    if count < minimum:
        return False
    if last_run is None:
        return True
    return count - last_run.basis >= analysis_growth(project) * max(last_run.basis, 1)


def run_claim(project: Project, kind: str, *, automatic: bool) -> AnalysisRun | None:
    """Take the queued run of `kind` (or, when `automatic`, start a new one) as this worker's:
    None when another worker runs one already or nothing is queued."""
    now = timezone.now()
    claimed = AnalysisRun.objects.filter(
        project=project, kind=kind, status=AnalysisRun.Status.QUEUED
    ).update(status=AnalysisRun.Status.RUNNING, started_at=now, heartbeat_at=now, message="Started")
    if claimed:
        return AnalysisRun.objects.get(
            project=project, kind=kind, status=AnalysisRun.Status.RUNNING
        )
    if not automatic:
        return None
    try:
        with transaction.atomic():
            return AnalysisRun.objects.create(
                project=project,
                kind=kind,
                status=AnalysisRun.Status.RUNNING,
                started_at=now,
                heartbeat_at=now,
                message="Started",
            )
    except IntegrityError:  # one is queued or running elsewhere
        return None


def run_finish(run: AnalysisRun, *, result: dict[str, Any] | None, error: str = "") -> None:
    """Close `run` as done (with its summary) or failed (with the error), and announce it."""
    run.status = AnalysisRun.Status.FAILED if error else AnalysisRun.Status.DONE
    run.finished_at = timezone.now()
    run.error = error[:2000]
    if not error:
        run.progress = 1.0
        run.result = result or {}
        run.basis = int((result or {}).get("basis", run.basis))
        run.message = str((result or {}).get("summary", "Done"))[:200]
    else:
        run.message = "Failed"
    run.save(
        update_fields=[
            "status",
            "finished_at",
            "error",
            "progress",
            "result",
            "basis",
            "message",
            "model_version",
        ]
    )
    publish(project_group(run.project_id), run_event(run))


def run_requeue(run: AnalysisRun) -> None:
    """Queue `run` again from the start, now: its worker handed it over to a fresh process
    (`curation.recycling`), whose start-up sweep runs it without waiting for it to look
    abandoned (`STALE_AFTER`)."""
    run.status = AnalysisRun.Status.QUEUED
    run.progress = 0.0
    run.message = "Queued again: its worker was replaced"
    AnalysisRun.objects.filter(pk=run.pk, status=AnalysisRun.Status.RUNNING).update(
        status=run.status, progress=run.progress, message=run.message
    )
    publish(project_group(run.project_id), run_event(run))


def runs_requeue_stale(project: Project) -> int:
    """Queue again the runs whose worker stopped mid-way (no progress for STALE_AFTER)."""
    cutoff = timezone.now() - STALE_AFTER
    return AnalysisRun.objects.filter(
        project=project,
        status=AnalysisRun.Status.RUNNING,
        heartbeat_at__lt=cutoff,
    ).update(status=AnalysisRun.Status.QUEUED, message="Queued again: its worker stopped")


def run_event(run: AnalysisRun) -> dict[str, Any]:
    """The websocket message about `run` (`annotations.consumers` passes it to the pages)."""
    return {
        "type": "analysis.progress",
        "project_id": run.project_id,
        "run": run.pk,
        "kind": run.kind,
        "status": run.status,
        "progress": round(run.progress, 3),
        "message": run.message,
    }


class Reporter:
    """Progress of one run: `report(done, total, message)` writes the row and tells the
    pages, at most every REPORT_EVERY seconds, and between steps lets a training run go
    first (`pause`, the trainer's `wait_while_training` in the worker)."""

    def __init__(self, run: AnalysisRun, pause: Callable[[], Any] | None = None) -> None:
        self.run = run
        self.pause = pause
        self._last = 0.0

    def __call__(self, done: float, total: float, message: str = "") -> None:
        if self.pause is not None:
            self.pause()
        now = time.monotonic()
        if now - self._last < REPORT_EVERY and done < total:
            return
        self._last = now
        self.run.progress = min(1.0, done / total) if total else 0.0
        if message:
            self.run.message = message[:200]
        self.run.heartbeat_at = timezone.now()
        AnalysisRun.objects.filter(pk=self.run.pk).update(
            progress=self.run.progress,
            message=self.run.message,
            heartbeat_at=self.run.heartbeat_at,
        )
        publish(project_group(self.run.project_id), run_event(self.run))
