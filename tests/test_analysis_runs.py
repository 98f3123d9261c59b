"""Runs of the data analyses (`curation.analysis_runs`, `curation.jobs`): a request is a queued
row a worker claims, runs and closes with its summary; progress reaches the project's sockets;
a failure, a missing analysis or a worker that died leaves a clear record, never a stuck run."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.utils import timezone

from annotations.events import project_group
from annotations.services import project_create
from curation import analysis_runs, jobs, services, trainer
from curation.models import AnalysisRun
from dataprep_site.env import channel_layers_for
from tests.analysis_fixtures import counting
from tests.conftest import add_text_items, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("data_dir")]

KIND = AnalysisRun.Kind.DUPLICATES


@pytest.fixture
def memory_layer(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()


@pytest.fixture
def counting_analysis(monkeypatch):
    """The duplicates slot runs the counting fixture, a real analysis of the project's items."""
    monkeypatch.setitem(analysis_runs.ANALYSES, KIND, "tests.analysis_fixtures.counting")
    monkeypatch.setattr(counting, "FAIL", False)
    monkeypatch.setattr(counting, "DUE", False)
    return counting


@pytest.fixture
def project(db):
    project = project_create(name="Runs", classes=["a", "b"])
    add_text_items(project, [f"text {i}" for i in range(45)])
    return project


def run_worker_job(project) -> None:
    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})


def test_a_second_request_joins_the_queued_run(project, memory_layer):
    user = make_user("runs-admin")
    first = analysis_runs.run_request(project=project, kind=KIND, user=user)
    second = analysis_runs.run_request(project=project, kind=KIND, user=None)
    assert first.pk == second.pk
    assert first.status == AnalysisRun.Status.QUEUED and first.requested_by == user
    assert AnalysisRun.objects.filter(project=project, kind=KIND).count() == 1


def test_an_unknown_analysis_is_refused_by_name(project):
    with pytest.raises(ValueError, match="unknown analysis 'sorcery'"):
        analysis_runs.run_request(project=project, kind="sorcery")
    assert not AnalysisRun.objects.exists()


def test_the_worker_runs_a_queued_run_and_records_its_summary(
    project, memory_layer, counting_analysis
):
    layer = memory_layer
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(project_group(project.pk), channel)
    run = analysis_runs.run_request(project=project, kind=KIND)
    assert jobs.ANALYSIS in jobs.due_jobs(project.pk)

    run_worker_job(project)

    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.DONE
    assert run.progress == 1.0
    assert run.basis == 45 and run.result["items"] == 45
    assert run.message == "45 items counted"
    assert run.started_at <= run.finished_at
    events = []
    while True:
        message = async_to_sync(layer.receive)(channel)
        if message["type"] == "analysis.progress":
            events.append(message)
            if message["status"] == "done":
                break
    assert events[0]["status"] == "running"
    assert events[-1] == {
        "type": "analysis.progress",
        "project_id": project.pk,
        "run": run.pk,
        "kind": KIND,
        "status": "done",
        "progress": 1.0,
        "message": "45 items counted",
    }
    assert jobs.ANALYSIS not in jobs.due_jobs(project.pk)


def test_a_failing_analysis_is_recorded_and_can_be_asked_for_again(
    project, memory_layer, counting_analysis
):
    counting_analysis.FAIL = True
    run = analysis_runs.run_request(project=project, kind=KIND)
    run_worker_job(project)
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.FAILED
    assert run.error == "RuntimeError: the data is on fire"
    again = analysis_runs.run_request(project=project, kind=KIND)
    assert again.pk != run.pk and again.status == AnalysisRun.Status.QUEUED


def test_an_analysis_this_install_lacks_fails_its_run_instead_of_waiting_forever(
    project, memory_layer, monkeypatch
):
    monkeypatch.setitem(analysis_runs.ANALYSES, KIND, "tests.analysis_fixtures.missing")
    run = analysis_runs.run_request(project=project, kind=KIND)
    run_worker_job(project)
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.FAILED
    assert "not available" in run.error


def test_a_run_whose_worker_died_is_queued_again_and_finished(
    project, memory_layer, counting_analysis
):
    run = analysis_runs.run_request(project=project, kind=KIND)
    long_ago = timezone.now() - analysis_runs.STALE_AFTER - timedelta(seconds=5)
    AnalysisRun.objects.filter(pk=run.pk).update(
        status=AnalysisRun.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago
    )
    assert project.pk in services.analysed_projects()
    run_worker_job(project)
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.DONE and run.basis == 45


def test_a_live_run_is_not_taken_over(project, memory_layer, counting_analysis):
    run = analysis_runs.run_request(project=project, kind=KIND)
    now = timezone.now()
    AnalysisRun.objects.filter(pk=run.pk).update(
        status=AnalysisRun.Status.RUNNING, started_at=now, heartbeat_at=now
    )
    run_worker_job(project)
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.RUNNING
    assert AnalysisRun.objects.filter(project=project, kind=KIND).count() == 1


def test_a_due_analysis_runs_without_a_request_and_not_again_until_due(
    project, memory_layer, counting_analysis, settings
):
    settings.ANALYSIS_INTERVAL_SECONDS = 0
    counting_analysis.DUE = True
    run_worker_job(project)
    run = AnalysisRun.objects.get(project=project, kind=KIND)
    assert run.status == AnalysisRun.Status.DONE and run.requested_by is None
    run_worker_job(project)  # the item count did not change: not due
    assert AnalysisRun.objects.filter(project=project, kind=KIND).count() == 1
    add_text_items(project, ["one more"], prefix="late")
    run_worker_job(project)
    assert AnalysisRun.objects.filter(project=project, kind=KIND, status="done").count() == 2


def test_automatic_runs_of_a_kind_wait_the_interval_after_the_last_one_ended(
    project, memory_layer, counting_analysis, settings
):
    """While a team labels, an analysis comes due again every few minutes; automatic runs wait
    ANALYSIS_INTERVAL_SECONDS after the last run of their kind ended, done or failed (a failing
    analysis is not retried on every label), while a person's request always goes."""
    settings.ANALYSIS_INTERVAL_SECONDS = 600
    counting_analysis.DUE = True
    counting_analysis.FAIL = True
    run_worker_job(project)
    assert list(AnalysisRun.objects.values_list("status", flat=True)) == ["failed"]
    counting_analysis.FAIL = False
    run_worker_job(project)  # due, but the failed run ended just now
    assert AnalysisRun.objects.count() == 1
    assert KIND not in jobs.analyses_due(project)

    analysis_runs.run_request(project=project, kind=KIND, user=make_user("runs-asker"))
    run_worker_job(project)  # asked for: it goes at once
    assert AnalysisRun.objects.filter(status="done").count() == 1
    add_text_items(project, ["one more"], prefix="late")
    run_worker_job(project)  # grown, but the last run ended just now
    assert AnalysisRun.objects.filter(status="done").count() == 1

    ended = timezone.now() - timedelta(seconds=601)
    AnalysisRun.objects.update(finished_at=ended)
    assert KIND in jobs.analyses_due(project)
    run_worker_job(project)
    assert AnalysisRun.objects.filter(status="done").count() == 2


@pytest.fixture
def in_a_worker():
    """This process runs a training worker (jobs go to it), as `manage.py trainworker` does."""
    jobs.attach_worker(lambda message: None)
    yield
    jobs.attach_worker(None)
    trainer.requests_waiting(0)


def test_in_a_worker_an_automatic_run_waits_for_a_pause_in_labelling(
    project, memory_layer, counting_analysis, settings, in_a_worker
):
    """A team labelling without a break would share the worker with a pass over every item;
    the automatic run starts once nothing was trained for ANALYSIS_QUIET_SECONDS."""
    settings.ANALYSIS_QUIET_SECONDS = 1
    counting_analysis.DUE = True
    job = threading.Thread(target=run_worker_job, args=(project,))
    for _ in range(3):  # labels keep coming: a training request every 0.3 s
        trainer.requests_waiting(1)
        trainer.requests_waiting(0)
        if not job.is_alive() and not AnalysisRun.objects.exists():
            job.start()
        time.sleep(0.3)
    assert not AnalysisRun.objects.exists()  # still waiting for a pause
    job.join(10)
    assert not job.is_alive()
    run = AnalysisRun.objects.get(project=project, kind=KIND)
    assert run.status == AnalysisRun.Status.DONE and run.requested_by is None


def test_a_person_asking_ends_the_wait_for_a_pause(
    project, memory_layer, counting_analysis, settings, in_a_worker
):
    settings.ANALYSIS_QUIET_SECONDS = 3600
    counting_analysis.DUE = True
    trainer.requests_waiting(1)  # a label's run is queued all along
    job = threading.Thread(target=run_worker_job, args=(project,))
    job.start()
    time.sleep(0.5)
    assert not AnalysisRun.objects.exists()
    asker = make_user("runs-impatient")
    analysis_runs.run_request(project=project, kind=KIND, user=asker)
    trainer.requests_waiting(0)  # that run started: the asked-for one steps aside only for runs
    job.join(10)
    assert not job.is_alive()
    run = AnalysisRun.objects.get(project=project, kind=KIND)
    assert run.status == AnalysisRun.Status.DONE and run.requested_by == asker
