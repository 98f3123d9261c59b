"""The training worker's follow-up jobs (`curation.jobs`) and the pruned version history
(`curation.versions`): jobs are messages the worker runs itself, found again from the database
when lost, and a project keeps a bounded, readable list of model versions."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import Membership, Project
from annotations.queue import next_items
from annotations.services import annotation_submit, project_create
from curation import analysis_runs, jobs, recycling, trainer, versions, worker
from curation.admin import ProjectTrainingAdmin
from curation.models import AnalysisRun, ModelVersion, ProjectTraining
from dataprep_site.env import channel_layers_for
from tests.conftest import add_text_items, make_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords", "data_dir"),
]

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def project(db) -> Project:
    project = project_create(name="Reviews", classes=list(WORDS))
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(15)]
        add_text_items(project, lines, prefix=name)
    return project


@pytest.fixture
def annie(project):
    user = make_user("jobs-annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return user


def label_next(project: Project, user, n: int) -> None:
    """Take `n` items from the queue and answer each with its true class."""
    for item in next_items(project=project, user=user, count=n):
        truth = item.external_id.rstrip("0123456789")
        annotation_submit(item=item, annotator=user, labels=[truth], client_uuid=uuid.uuid4())


def label_balanced(project: Project, user, per_class: int) -> None:
    """Answer `per_class` items of each class (taken from the queue, as annotators do)."""
    wanted = dict.fromkeys(WORDS, per_class)
    for _ in range(5):  # the project's 30 items fit in one lease
        if not any(wanted.values()):
            return
        for item in next_items(project=project, user=user, count=40):
            truth = item.external_id.rstrip("0123456789")
            if wanted[truth]:
                wanted[truth] -= 1
                annotation_submit(
                    item=item, annotator=user, labels=[truth], client_uuid=uuid.uuid4()
                )


def queued(layer) -> list[dict]:
    found = []
    while True:
        try:
            found.append(async_to_sync(asyncio.wait_for)(layer.receive("training"), 0.2))
        except TimeoutError:
            return found


def current(project: Project) -> ModelVersion | None:
    training = ProjectTraining.objects.select_related("current_version").filter(project=project)
    row = training.first()
    return row.current_version if row else None


def test_a_lost_accuracy_estimate_is_found_again_by_the_next_sweep(memory_layer, project, annie):
    label_balanced(project, annie, 6)
    trainer.train(project.pk)  # trained outside a worker: no job was queued anywhere
    assert current(project).estimated_accuracy is None
    # The new model's predictions for every item are due too (`curation.predictions`), and the
    # project's first dashboard.
    assert jobs.due_jobs(project.pk) == [jobs.ESTIMATE, jobs.ANALYSIS, jobs.DASHBOARD]
    admin = ProjectTrainingAdmin(ProjectTraining, None)
    training = ProjectTraining.objects.get(project=project)
    assert "accuracy estimate: due" in admin.follow_up(training)
    layer = get_channel_layer()
    queued(layer)  # the answers' wake-up calls

    assert worker.sweep() == []  # nothing to train; the estimate is due
    messages = queued(layer)

    assert messages == [
        {"type": jobs.ESTIMATE, "project_id": project.pk},
        {"type": jobs.ANALYSIS, "project_id": project.pk},
        {"type": jobs.DASHBOARD, "project_id": project.pk},
    ]
    trainer.forget_states()  # run by a worker that did not train it: the learner is rebuilt
    for message in messages:
        jobs.job_run(message)
    version = current(project)
    assert version.estimated_accuracy is not None and 0 <= version.estimated_accuracy <= 1
    assert version.metrics["cv_labels"] == 12
    assert jobs.due_jobs(project.pk) == []
    assert "accuracy estimate: done" in admin.follow_up(training)
    worker.sweep()
    assert queued(layer) == []  # done: not queued again


def test_an_estimate_no_longer_due_when_it_runs_does_nothing(memory_layer, project, annie):
    label_balanced(project, annie, 6)
    trainer.train(project.pk)
    message = {"type": jobs.ESTIMATE, "project_id": project.pk}
    jobs.job_run(message)
    done = current(project).metrics

    jobs.job_run(message)  # a second worker got the same job

    assert current(project).metrics == done  # cv_ms unchanged: no second estimate


async def test_the_worker_runs_the_estimate_as_its_own_job_after_training(
    memory_layer, project, annie, caplog
):
    """A TrainingWorker on the in-memory layer (as in embedded mode): the labels' wake-ups
    train the project, and the estimate due after the run is queued and run by the worker."""
    caplog.set_level(logging.INFO, logger="curation.jobs")
    running = asyncio.ensure_future(
        worker.TrainingWorker(
            worker.training_application(), ["training"], get_channel_layer(), sweep_seconds=3600
        ).arun()
    )
    try:
        await database_sync_to_async(label_balanced)(project, annie, 6)
        for _ in range(400):
            version = await database_sync_to_async(current)(project)
            if version is not None and version.estimated_accuracy is not None:
                break
            await asyncio.sleep(0.05)
        assert version.estimated_accuracy is not None
        assert version.metrics["cv_labels"] >= 10
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    logged = [r.getMessage() for r in caplog.records if r.name == "curation.jobs"]
    assert any(m.startswith(f"training.estimate for project {project.pk} started") for m in logged)


def test_trainworker_refuses_a_sweep_interval_that_is_not_positive():
    with pytest.raises(CommandError, match="--sweep-seconds must be positive"):
        call_command("trainworker", "--sweep-seconds", "0")


def test_milestones_are_1_2_5_times_a_power_of_ten():
    assert [versions.milestone(n) for n in (0, 1, 2, 4, 5, 9, 10, 19, 20, 99, 500, 999)] == [
        None, 1, 2, 2, 5, 5, 10, 10, 20, 50, 500, 500
    ]  # fmt: skip


def test_old_model_versions_are_pruned_but_milestones_and_recent_ones_stay(
    settings, memory_layer, project, annie
):
    settings.MODEL_VERSIONS_KEPT = 4
    for _ in range(12):
        label_next(project, annie, 1)
        trainer.train(project.pk)

    kept = list(
        ModelVersion.objects.filter(project=project)
        .order_by("version")
        .values_list("version", "labels_used")
    )

    # v1..v8 are old: the first versions at 1, 2 and 5 labels stay; v9..v12 are recent.
    assert kept == [(1, 1), (2, 2), (5, 5), (9, 9), (10, 10), (11, 11), (12, 12)]
    assert current(project).version == 12
    label_next(project, annie, 1)
    assert trainer.train(project.pk).version.version == 13  # numbering goes on
    model_files = sorted(p.name for p in current(project).path.parent.iterdir())
    assert len(model_files) == versions.KEEP_FILES


def test_trainworker_keeps_database_connections_in_every_thread_unless_told_otherwise():
    from django.db import connections

    from curation.management.commands.trainworker import WORKER_CONN_MAX_AGE, keep_connections

    options = connections.settings["default"]
    before = options["CONN_MAX_AGE"]
    seen = []
    try:
        options["CONN_MAX_AGE"] = 0
        keep_connections()
        thread = threading.Thread(
            target=lambda: seen.append(connections["default"].settings_dict["CONN_MAX_AGE"])
        )
        thread.start()
        thread.join()
        options["CONN_MAX_AGE"] = 60  # DB_CONN_MAX_AGE chosen by the operator: left alone
        keep_connections()
        assert options["CONN_MAX_AGE"] == 60
    finally:
        options["CONN_MAX_AGE"] = before
    assert seen == [WORKER_CONN_MAX_AGE]


def test_the_worker_returns_freed_memory_every_release_every_requests(monkeypatch):
    released = []
    monkeypatch.setattr(worker, "release_memory", lambda: released.append(1))
    monkeypatch.setattr(worker, "_requests", 0)
    for _ in range(2 * worker.RELEASE_EVERY):
        worker._count_request()
    assert len(released) == 2
    worker.limit_malloc_arenas()  # glibc here; a no-op elsewhere, never an error


def test_runs_within_seconds_of_a_look_at_the_due_jobs_leave_one_look_for_later(
    memory_layer, project, annie
):
    """The look is ~27 queries and the next label's run waited for it: after every run it
    happens at most every LOOK_SECONDS, and a run inside that time leaves one look for when
    it is up, so the last label's jobs are not left to the sweep."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    label_balanced(project, annie, 6)  # an estimate is due once a model exists
    trainer.train(project.pk)
    submitted: list[dict] = []
    jobs.attach_worker(submitted.append)
    try:
        jobs.look_soon(project.pk)  # the first look: at once
        due = {m["type"] for m in submitted}
        assert jobs.ESTIMATE in due
        submitted.clear()
        for _ in range(3):  # runs right after it: no query, one look left for later
            with CaptureQueriesContext(connection) as looked:
                jobs.look_soon(project.pk)
            assert len(looked) == 0
        [later] = submitted
        assert later["type"] == jobs.LOOK and later["project_id"] == project.pk
        assert 0 < later["at"] - time.monotonic() <= jobs.LOOK_SECONDS
        jobs.forget_jobs()  # the estimate is not run here: only the look is
        jobs.look_soon(project.pk)  # a worker that restarted looks at once
        assert {m["type"] for m in submitted[1:]} == due
    finally:
        jobs.attach_worker(None)
        jobs.forget_jobs()


def test_the_worker_runs_the_look_left_for_later_when_its_time_has_come(
    memory_layer, project, annie
):
    label_balanced(project, annie, 6)
    trainer.train(project.pk)
    submitted: list[dict] = []
    jobs.attach_worker(submitted.append)
    try:
        jobs.look_soon(project.pk)
        due = {m["type"] for m in submitted}
        jobs.look_soon(project.pk)
        later = submitted[-1]
        jobs.forget_jobs()
        jobs._look_pending.add(project.pk)  # as look_soon left it
        submitted.clear()
        jobs.look_later(later)
        assert {m["type"] for m in submitted} == due and jobs.ESTIMATE in due
        assert not jobs._look_pending
    finally:
        jobs.attach_worker(None)
        jobs.forget_jobs()


@pytest.fixture
def handing_over():
    """This process handing its jobs over, as a retiring worker past its grace does."""
    recycling.hand_over()
    yield
    recycling._handing_over.clear()


@pytest.mark.usefixtures("handing_over")
def test_jobs_handed_over_stop_at_their_next_step_and_stay_due_for_the_fresh_process(
    memory_layer, project, annie
):
    label_balanced(project, annie, 6)
    trainer.train(project.pk)
    assert jobs.estimate_due(current(project))
    run = analysis_runs.run_request(project=project, kind=AnalysisRun.Kind.DUPLICATES)

    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})
    jobs.job_run({"type": jobs.ESTIMATE, "project_id": project.pk})

    runs = AnalysisRun.objects.filter(project=project)
    # The analysis in hand (the first due) is queued again: not failed, not left running for
    # the 10 minutes that make a run look abandoned; the others were not started.
    handed = runs.get(message="Queued again: its worker was replaced")
    assert handed.status == AnalysisRun.Status.QUEUED and handed.error == ""
    assert not runs.exclude(status=AnalysisRun.Status.QUEUED).exists()
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.QUEUED
    assert current(project).estimated_accuracy is None  # nothing half-written
    assert {jobs.ESTIMATE, jobs.ANALYSIS} <= set(jobs.due_jobs(project.pk))

    recycling._handing_over.clear()  # the fresh process
    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})
    jobs.job_run({"type": jobs.ESTIMATE, "project_id": project.pk})
    assert runs.get(pk=handed.pk).status == AnalysisRun.Status.DONE
    assert runs.get(pk=run.pk).status == AnalysisRun.Status.DONE
    assert current(project).estimated_accuracy is not None


def test_a_retiring_worker_queues_no_job_and_leaves_them_due_for_the_fresh_process(
    memory_layer, project, annie
):
    label_balanced(project, annie, 6)
    trainer.train(project.pk)
    recycling.retire()
    try:
        assert jobs.jobs_schedule(project.pk) == []  # queued, they would only be dropped
    finally:
        recycling._retiring.clear()
    assert jobs.ESTIMATE in jobs.due_jobs(project.pk)
    assert jobs.ESTIMATE in jobs.jobs_schedule(project.pk)
    jobs.forget_jobs()
