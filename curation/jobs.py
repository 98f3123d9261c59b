"""Follow-up jobs of the training worker: the accuracy estimate, the weighted consensus, the data
analyses, the dataset versions (written, then measured) and the project dashboard's numbers and
plots.

Both take seconds on a large project, and annotators must not wait for them, so a training run
does not do them itself: the worker that ran it sends them to its own consumer as messages,
`{"type": "training.estimate" | "training.consensus", "project_id": …}`, which runs them one
after another beside the training requests (`curation.worker.TrainingWorker`), logging each.

Whether a job is due is read from the database (the current version's `cv_labels`, the answers
counted at the last consensus), never remembered, so a job lost with a killed worker or a Redis
outage is found again by the next sweep of any worker, and a job that is no longer due when it
runs (another worker did it) does nothing.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from annotations.events import project_group, publish
from annotations.models import Project
from annotations.prediction_endpoint import ENDPOINT_JOB
from curation import (
    analysis_runs,
    consensus,
    dashboard,
    dataset_versions,
    endpoint_run,
    recycling,
    trainer,
)
from curation.analysis_runs import ANALYSIS
from curation.dataset_versions import VERSIONS
from curation.feature_choice import feature_set_update
from curation.models import AnalysisRun, DatasetVersion, ModelVersion, ProjectTraining
from curation.status import model_status
from curation.training_requests import send_to_worker, training_request

logger = logging.getLogger(__name__)

__all__ = [
    "CONSENSUS",
    "CV_GROWTH",
    "DASHBOARD",
    "ENDPOINT",
    "ESTIMATE",
    "JOB_TYPES",
    "VERSIONS",
    "due_jobs",
    "estimate_due",
    "job_run",
    "jobs_schedule",
    "look_later",
    "look_soon",
    "jobs_status",
    "analysis_run_inline",
    "wait_for_jobs",
]

ESTIMATE = "training.estimate"
#: A look at which jobs are due, after training runs (`look_soon`).
LOOK = "training.look"
CONSENSUS = "training.consensus"
DASHBOARD = "training.dashboard"
#: Predictions from the project's own model server (`curation.endpoint_run`).
ENDPOINT = ENDPOINT_JOB
JOB_TYPES = frozenset({ESTIMATE, CONSENSUS, ANALYSIS, VERSIONS, DASHBOARD, ENDPOINT})

#: Cross-validated accuracy is recomputed when the labels grew by this share since the last
#: estimate (five refits: the cost grows with the labels, so the runs thin out geometrically).
CV_GROWTH = 0.5
#: Labels before a cross-validated estimate means anything.
CV_MIN_LABELS = 10

# This process's jobs: (type, project) scheduled and not finished yet, so that a sweep does not
# queue a job twice. A condition, so tests can wait until none runs.
_active: set[tuple[str, int]] = set()
_idle = threading.Condition()
#: Set by a running `TrainingWorker`: puts a message on its own consumer's queue.
_local_submit: Callable[[dict[str, Any]], None] | None = None
#: The shortest time between two looks at a project's due jobs after its training runs.
LOOK_SECONDS = 5.0
_last_look: dict[int, float] = {}  # project id → monotonic time of its last look
_look_pending: set[int] = set()  # projects with a later look queued


def attach_worker(submit: Callable[[dict[str, Any]], None] | None) -> None:
    """Jobs go to this process's worker (`submit`), which holds the learner they need. None: no
    worker any more (it stops, or retires to be replaced: `curation.recycling`); an automatic
    analysis still waiting for a pause in labelling gives up, the next worker finds it due."""
    global _local_submit
    _local_submit = submit


def estimate_due(version: ModelVersion | None) -> bool:
    """True when `version`'s cross-validated accuracy is missing or older than CV_GROWTH of
    its labels ago (an estimate that found too few labels per class counts as done)."""
    if version is None or version.labels_used < CV_MIN_LABELS:
        return False
    cv_labels = (version.metrics or {}).get("cv_labels", 0)
    if version.labels_used >= math.ceil(cv_labels * (1 + CV_GROWTH)):
        return True
    return version.estimated_accuracy is None and version.labels_used > cv_labels


def due_jobs(project_id: int) -> list[str]:
    """The follow-up jobs `project_id` needs now, read from the database."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return []
    training = (
        ProjectTraining.objects.filter(project=project).select_related("current_version").first()
    )
    kinds = []
    if estimate_due(training.current_version if training else None):
        kinds.append(ESTIMATE)
    if consensus.consensus_due(project):
        kinds.append(CONSENSUS)
    if analyses_due(project):
        kinds.append(ANALYSIS)
    if versions_due(project):
        kinds.append(VERSIONS)
    if dashboard.dashboard_due(project):
        kinds.append(DASHBOARD)
    if endpoint_run.endpoint_due(project_id):
        kinds.append(ENDPOINT)
    return kinds


def versions_due(project: Project) -> bool:
    """A version is queued (or its writer died), one is written and not yet measured, or the
    project saves one every N gold labels and N more came."""
    return bool(
        dataset_versions.versions_pending(project.pk)
        or dataset_versions.metrics_pending(project.pk)
        or dataset_versions.snapshot_due(project)
    )


def analyses_due(project: Project) -> list[str]:
    """The analyses `project` needs now: those queued, and those whose `is_due` says so once
    the last run of their kind is `ANALYSIS_INTERVAL_SECONDS` old."""
    analysis_runs.runs_requeue_stale(project)
    queued = set(
        AnalysisRun.objects.filter(project=project, status=AnalysisRun.Status.QUEUED).values_list(
            "kind", flat=True
        )
    )
    resting = analysis_runs.resting_kinds(project)
    due = []
    for kind in analysis_runs.ANALYSES:
        if kind in queued:
            due.append(kind)
            continue
        if kind in resting:
            continue
        module = _analysis_module(kind)
        if module is not None and module.is_due(project, analysis_runs.last_done(project, kind)):
            due.append(kind)
    return due


def _analysis_module(kind: str) -> Any:
    try:
        return importlib.import_module(analysis_runs.ANALYSES[kind])
    except ModuleNotFoundError:
        return None


def jobs_status(project: Project) -> dict[str, str]:
    """Each job's state for the admin: "due" (waiting for a worker) or "done"."""
    due = due_jobs(project.pk)
    return {
        "accuracy estimate": "due" if ESTIMATE in due else "done",
        "weighted consensus": "due" if CONSENSUS in due else "done",
        "data analyses": "due" if ANALYSIS in due else "done",
        "dataset versions": "due" if VERSIONS in due else "done",
        "dashboard": "due" if DASHBOARD in due else "done",
        "prediction endpoint": "due" if ENDPOINT in due else "done",
    }


def jobs_schedule(project_id: int) -> list[str]:
    """Queue the project's due jobs on this process's worker, else on the training channel;
    return the types queued. Jobs already queued here are not queued again, and none by a
    worker that is replacing itself (`curation.recycling`)."""
    if recycling.retiring():
        return []
    try:
        kinds = due_jobs(project_id)
    except Exception:
        logger.exception("could not tell which jobs project %s needs", project_id)
        return []
    queued = []
    for kind in kinds:
        with _idle:
            if (kind, project_id) in _active:
                continue
            _active.add((kind, project_id))
        message = {"type": kind, "project_id": project_id}
        submit = _local_submit
        if submit is not None:
            submit(message)
        elif not send_to_worker(message):
            # No worker here and the channel layer is down: the next sweep finds it due again.
            _finished(kind, project_id)
            continue
        else:
            _finished(kind, project_id)  # another process runs it; it is not ours to track
        logger.info("%s for project %s queued", kind, project_id)
        queued.append(kind)
    return queued


def look_soon(project_id: int) -> None:
    """After a training run: queue the project's due jobs, at most once every `LOOK_SECONDS`.
    The look is ~27 queries (51 ms at 100k items), the jobs it finds change every few minutes,
    and the next label's run waited for it; a run within `LOOK_SECONDS` of the last look leaves
    one for when they are up, so the last label's jobs are not left to the sweep. Without a
    worker in this process (tests, benchmarks): at once."""
    now = time.monotonic()
    with _idle:
        last = _last_look.get(project_id)
        if _local_submit is not None and last is not None and now - last < LOOK_SECONDS:
            if project_id in _look_pending:
                return
            _look_pending.add(project_id)
            later = {"type": LOOK, "project_id": project_id, "at": last + LOOK_SECONDS}
        else:
            _last_look[project_id] = now
            later = None
    if later is None:
        jobs_schedule(project_id)
    elif (submit := _local_submit) is not None:
        submit(later)
    else:  # the worker went away meanwhile
        with _idle:
            _look_pending.discard(project_id)


def look_later(message: dict[str, Any]) -> None:
    """The look `look_soon` left for later, once its time has come (in a worker thread);
    never raises."""
    project_id = int(message["project_id"])
    with _idle:
        _last_look[project_id] = time.monotonic()
    close_old_connections()
    try:
        jobs_schedule(project_id)
    finally:
        close_old_connections()
        with _idle:
            _look_pending.discard(project_id)
            _idle.notify_all()


def job_run(message: dict[str, Any]) -> None:
    """Run one job message (in a worker thread); never raises."""
    kind, project_id = message["type"], int(message["project_id"])
    with _idle:
        _active.add((kind, project_id))
    started = time.perf_counter()
    logger.info("%s for project %s started", kind, project_id)
    close_old_connections()
    try:
        runner = {
            ESTIMATE: _estimate,
            CONSENSUS: _consensus,
            ANALYSIS: _analyses,
            VERSIONS: versions_work,
            DASHBOARD: _dashboard,
            ENDPOINT: _endpoint,
        }[kind]
        done = runner(project_id)
        logger.info(
            "%s for project %s %s in %.0f ms",
            kind,
            project_id,
            "done" if done else "not due any more",
            (time.perf_counter() - started) * 1000,
        )
    except recycling.HandedOver:
        logger.info(
            "%s for project %s handed over to the fresh process after %.0f ms",
            kind,
            project_id,
            (time.perf_counter() - started) * 1000,
        )
    except Exception:
        logger.exception("%s for project %s failed", kind, project_id)
    finally:
        close_old_connections()
        _finished(kind, project_id)


def wait_for_jobs(timeout: float = 30.0) -> None:
    """Wait until no job of this process, nor a look at the due ones, is queued or running
    (tests, before the database goes)."""
    with _idle:
        _idle.wait_for(lambda: not _active and not _look_pending, timeout)


def forget_jobs() -> None:
    """Forget this process's queued jobs (a worker that stops; tests)."""
    with _idle:
        _active.clear()
        _last_look.clear()
        _look_pending.clear()
        _idle.notify_all()


def _finished(kind: str, project_id: int) -> None:
    with _idle:
        _active.discard((kind, project_id))
        _idle.notify_all()


def _estimate(project_id: int) -> bool:
    """Refresh the current version's cross-validated accuracy and announce it."""
    training = (
        ProjectTraining.objects.filter(project_id=project_id)
        .select_related("current_version", "project")
        .first()
    )
    version = training.current_version if training else None
    if not estimate_due(version):
        return False
    learner = trainer.learner_snapshot(training.project, version.version)
    if learner is None:
        return False
    started = time.perf_counter()
    accuracy = learner.estimated_accuracy(between_folds=trainer.wait_while_training)
    # With item vectors: which features do best on these labels (`curation.feature_choice`).
    features = (
        None
        if accuracy is None  # too few labels a class to cross-validate any feature set
        else feature_set_update(training.project, between_folds=trainer.wait_while_training)
    )
    metrics = {
        **(version.metrics or {}),
        **(features or {}),
        "estimated_accuracy": accuracy,
        "cv_labels": learner.n_labels,
        "cv_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    ModelVersion.objects.filter(pk=version.pk).update(estimated_accuracy=accuracy, metrics=metrics)
    still_current = ProjectTraining.objects.filter(
        project_id=project_id, current_version_id=version.pk
    ).exists()
    if still_current:  # a newer version carries this estimate forward and announces itself
        publish(project_group(project_id), model_status(training.project))
    if features and features["feature_set"] != features["feature_set_before"]:
        send_to_worker(training_request(project_id))
    return True


def _consensus(project_id: int) -> bool:
    """Refresh a crowdlab project's weighted consensus; the gold rows it changes are newer than
    the model, so it asks for training (and the sweep would find them anyway)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None or not consensus.consensus_due(project):
        return False
    consensus.consensus_update(project)
    return True


def _analyses(project_id: int) -> bool:
    """Run `project_id`'s queued and due analyses one after another; each run's failure is
    recorded on its row (and logged), never raised."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return False
    ran = False
    for kind in analyses_due(project):
        module = _analysis_module(kind)
        queued = _queued(project, kind)
        if not queued:
            waited = _pause_in_labelling(project, kind)
            if waited == "stopping":
                return ran
            queued = waited == "asked"
        run = analysis_runs.run_claim(project, kind, automatic=not queued)
        if run is None:
            continue
        ran = True
        if module is None:
            analysis_runs.run_finish(run, result=None, error=f"{kind} is not available here")
            continue
        _execute(project, run, module, pause=trainer.wait_while_training)
    return ran


def versions_work(project_id: int) -> bool:
    """Write the project's queued versions (and an automatic one when due), then measure the
    model of each written version that has no metrics yet."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None:
        return False
    done = False
    for version in dataset_versions.versions_pending(project_id):
        if dataset_versions.version_claim(version):
            dataset_versions.version_build(version)
            _announce_version(version)
            done = True
    if dataset_versions.snapshot_due(project):
        version = dataset_versions.version_request(
            project, trigger=DatasetVersion.Trigger.AUTOMATIC, wake=False
        )
        if dataset_versions.version_claim(version):
            dataset_versions.version_build(version)
            _announce_version(version)
            done = True
    from curation import version_metrics  # scikit-learn: imported where it runs

    for version in dataset_versions.metrics_pending(project_id):
        trainer.wait_while_training()
        version_metrics.metrics_measure(version)
        _announce_version(version)
        done = True
    return done


def _dashboard(project_id: int) -> bool:
    """Refresh the project's dashboard when it is due (another worker may have done it)."""
    project = Project.objects.filter(pk=project_id).first()
    if project is None or not dashboard.dashboard_due(project):
        return False
    dashboard.dashboard_refresh(project)
    return True


def _endpoint(project_id: int) -> bool:
    """Ask the project's prediction endpoint for the items it has not predicted (a failure is
    recorded on the endpoint and retried after the backoff)."""
    return endpoint_run.endpoint_run(project_id).batches > 0


def _announce_version(version: DatasetVersion) -> None:
    version.refresh_from_db()
    publish(project_group(version.project_id), dataset_versions.version_event(version))


def _queued(project: Project, kind: str) -> bool:
    return AnalysisRun.objects.filter(
        project=project, kind=kind, status=AnalysisRun.Status.QUEUED
    ).exists()


def _pause_in_labelling(project: Project, kind: str) -> str:
    """In a worker, hold an automatic run until labelling pauses (no training for
    ANALYSIS_QUIET_SECONDS) or ANALYSIS_DEFER_SECONDS have passed. Returns "pause" (run it),
    "asked" (a person asked for a run of `kind` meanwhile: it is theirs) or "stopping" (the
    worker stops: the next one finds the run due). Outside a worker it does not wait."""
    deadline = time.monotonic() + settings.ANALYSIS_DEFER_SECONDS
    in_worker = _local_submit is not None
    while in_worker:
        left = deadline - time.monotonic()
        if trainer.wait_for_a_pause(settings.ANALYSIS_QUIET_SECONDS, min(1.0, max(0.0, left))):
            break
        if _local_submit is None:
            return "stopping"
        if _queued(project, kind):
            return "asked"
        if left <= 0:
            break
    return "asked" if _queued(project, kind) else "pause"


def _execute(
    project: Project,
    run: AnalysisRun,
    module: Any,
    *,
    pause: Callable[[], Any] | None,
    progress: Callable[[AnalysisRun], None] | None = None,
) -> None:
    """Run a claimed `run` of `module` and close it with its summary, or with the error
    (logged, never raised)."""
    publish(project_group(project.pk), analysis_runs.run_event(run))
    reporter = analysis_runs.Reporter(run, pause=pause)
    report = reporter
    if progress is not None:

        def report(done: float, total: float, message: str = "") -> None:
            reporter(done, total, message)
            progress(run)

    started = time.perf_counter()
    try:
        result = module.run(project, run, report)
    except recycling.HandedOver:
        analysis_runs.run_requeue(run)
        raise
    except Exception as exc:
        logger.exception("%s analysis for project %s failed", run.kind, project.pk)
        analysis_runs.run_finish(run, result=None, error=f"{type(exc).__name__}: {exc}")
        return
    result = {**(result or {}), "seconds": round(time.perf_counter() - started, 2)}
    analysis_runs.run_finish(run, result=result)
    logger.info("%s analysis for project %s done: %s", run.kind, project.pk, result)


def analysis_run_inline(
    project: Project,
    kind: str,
    *,
    user=None,
    progress: Callable[[AnalysisRun], None] | None = None,
) -> AnalysisRun | None:
    """Queue a run of `kind` and run it in this process (management commands, benchmarks),
    `progress(run)` after each report. None when a worker is running one already."""
    module = _analysis_module(kind)
    if module is None:
        raise ValueError(f"{kind} is not available here")
    analysis_runs.run_request(project=project, kind=kind, user=user)
    run = analysis_runs.run_claim(project, kind, automatic=False)
    if run is None:
        return None
    _execute(project, run, module, pause=None, progress=progress)
    run.refresh_from_db()
    return run
