"""A training worker that has outgrown its memory ceiling replaces itself with a fresh process
(`curation.recycling`), without losing a label: the real `manage.py trainworker`, a private
Redis and the test database, as in `tests/test_faults.py`."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from channels.layers import InMemoryChannelLayer

from annotations.models import Membership, PreAnnotation
from annotations.prediction_endpoint import endpoint_save
from annotations.services import project_create
from curation import recycling
from curation.recycling import MemoryCeiling, rss_bytes
from curation.worker import TRAINING_CHANNEL, TrainingWorker, training_application
from tests.conftest import add_text_items
from tests.model_server import confident
from tests.test_faults import (  # noqa: F401 (fixtures)
    WORDS,
    annie,
    child_env,
    label_next,
    labels_used,
    private_redis,
    processes,
    texts,
    use_layer,
    wait_until,
)
from tests.test_prediction_endpoint_worker import model  # noqa: F401 (fixture)

MIB = 2**20


def test_the_ceiling_is_measured_from_the_memory_the_worker_settled_at():
    ceiling = MemoryCeiling(100 * MIB, settle_runs=10, settle_seconds=3600)
    assert not ceiling.exceeded(9, 900 * MIB)  # still loading what it needs: no baseline
    assert not ceiling.exceeded(10, 300 * MIB)  # settled: the baseline
    assert ceiling.baseline == 300 * MIB
    assert not ceiling.exceeded(500, 400 * MIB)
    assert ceiling.exceeded(501, 401 * MIB)
    assert not MemoryCeiling(MIB, settle_runs=1).exceeded(5, 0)  # no /proc: never


def test_a_fresh_worker_whose_first_run_is_slow_settles_a_while_after_it(monkeypatch):
    """A replacement's first run rebuilds its state from every label: under a team at full
    speed it ended after the time to settle had passed, and the memory right after it was
    taken for the baseline (506 MiB where the first process had settled at 370)."""
    clock = [1000.0]
    monkeypatch.setattr(recycling.time, "monotonic", lambda: clock[0])
    ceiling = MemoryCeiling(100 * MIB, settle_runs=50, settle_seconds=120)
    assert not ceiling.exceeded(0, 300 * MIB)
    clock[0] += 150  # the first run took longer than the time to settle
    assert not ceiling.exceeded(1, 500 * MIB) and ceiling.baseline is None
    clock[0] += 119
    assert not ceiling.exceeded(4, 600 * MIB) and ceiling.baseline is None
    clock[0] += 1
    assert not ceiling.exceeded(5, 420 * MIB) and ceiling.baseline == 420 * MIB
    assert ceiling.exceeded(6, 521 * MIB)


def test_a_worker_whose_runs_are_few_settles_after_a_while_all_the_same():
    """Under a team at full speed the worker's runs are paced and get the CPU last: it must
    not wait for its 50th run to measure anything."""
    slow = MemoryCeiling(100 * MIB, settle_runs=50, settle_seconds=0)
    assert not slow.exceeded(0, 300 * MIB)  # nothing loaded yet
    assert not slow.exceeded(3, 300 * MIB) and slow.baseline == 300 * MIB
    assert slow.exceeded(7, 401 * MIB)


def test_this_process_reads_its_resident_memory():
    assert 10 * MIB < rss_bytes() < 10_000 * MIB


@pytest.fixture
def worker_args() -> list[str]:
    return []


@pytest.fixture
def worker(private_redis, use_layer, processes, worker_args):  # noqa: F811 (tests.test_faults)
    """The real `manage.py trainworker` with a 1 MB ceiling, settling after 2 runs (and
    `worker_args`); its log."""
    use_layer(private_redis.url)
    process = processes.start(
        ["manage.py", "trainworker", "--sweep-seconds", "3600"]
        + ["--max-memory-growth", "1", "--settle-runs", "2", *worker_args],
        # WEBHOOKS_ALLOW_PRIVATE: a model server on this machine (`model`)
        child_env(processes.tmp_path, REDIS_URL=private_redis.url, WEBHOOKS_ALLOW_PRIVATE="1"),
    )
    return process, lambda: processes.log(process)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
def test_a_worker_past_its_ceiling_replaces_itself_and_the_fresh_one_keeps_training(
    texts,  # noqa: F811 (fixtures from tests.test_faults)
    annie,  # noqa: F811
    worker,
):
    project = texts
    process, log = worker
    second = _larger_project(annie)
    given = _until_settled(project, annie, log)
    _grow_until(second, annie, log, "replacing itself")
    wait_until(lambda: log().count("training worker on channel") == 2, "the fresh process")
    assert process.poll() is None, log()  # the same process, executed again

    given += len(label_next(project, annie, 2))  # their wake-ups reach the fresh process
    wait_until(lambda: labels_used(project) == given, "training by the fresh process")
    assert "grew from" in log()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
def test_a_worker_past_its_ceiling_keeps_training_until_its_job_in_hand_is_done(
    texts,  # noqa: F811 (fixtures from tests.test_faults)
    annie,  # noqa: F811
    worker,
    model,  # noqa: F811
):
    """A follow-up job cut short would wait minutes to be queued again (an analysis 10, a
    dataset version 30) and could be cut again: the retiring worker lets it finish, and
    labels given meanwhile are still trained."""
    project = texts
    _, log = worker
    second = _larger_project(annie)
    given = _until_settled(project, annie, log)

    release = threading.Event()

    def held_answer(asked: dict) -> dict:  # the job in hand: a model server taking its time
        release.wait(60)
        scores = [{"id": i["id"], "scores": confident(i, asked["classes"])} for i in asked["items"]]
        return {"model_version": "v1", "predictions": scores}

    model.answer = held_answer
    endpoint_save(project=project, url=model.url, batch_size=500, timeout_seconds=90)
    wait_until(lambda: model.requests, "the endpoint job asking the model server")
    _grow_until(second, annie, log, "grew from")

    given += len(label_next(project, annie, 1))  # trained by the retiring process itself
    wait_until(lambda: labels_used(project) == given, "a label trained while retiring")
    assert "replacing itself" not in log()
    release.set()
    wait_until(lambda: log().count("training worker on channel") == 2, "the fresh process")
    text = log()
    job_done = text.index(f"training.endpoint for project {project.pk} done")
    assert text.index("grew from") < job_done < text.index("replacing itself"), text
    assert PreAnnotation.objects.filter(item__project=project).count() == project.items.count()
    assert len(model.requests) == 1  # finished by the old process, not asked again


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
@pytest.mark.parametrize("worker_args", [["--job-grace", "1"]])
def test_a_retiring_worker_hands_a_long_job_over_to_the_fresh_process_after_its_grace(
    texts,  # noqa: F811 (fixtures from tests.test_faults)
    annie,  # noqa: F811
    worker,
    model,  # noqa: F811
):
    """Under a team at full speed a job at 1M items ran for minutes while the retiring worker
    went on growing: past the grace the job stops at its next step (here, between two batches
    of the model server's predictions) and the fresh process does the rest at once."""
    project = texts
    _, log = worker
    second = _larger_project(annie)
    _until_settled(project, annie, log)

    release = threading.Event()

    def held_answer(asked: dict) -> dict:  # the first batch: a model server taking its time
        release.wait(60)
        scores = [{"id": i["id"], "scores": confident(i, asked["classes"])} for i in asked["items"]]
        return {"model_version": "v1", "predictions": scores}

    model.answer = held_answer
    batch = 7
    assert project.items.count() > 2 * batch
    endpoint_save(project=project, url=model.url, batch_size=batch, timeout_seconds=90)
    wait_until(lambda: model.requests, "the endpoint job asking the model server")
    _grow_until(second, annie, log, "grew from")
    wait_until(lambda: "handing the jobs in hand over" in log(), "the grace to end")
    assert "replacing itself" not in log()  # the batch in hand is not cut
    release.set()
    wait_until(lambda: log().count("training worker on channel") == 2, "the fresh process")
    done = f"training.endpoint for project {project.pk} done"
    wait_until(lambda: done in log(), "the fresh process predicting the rest")
    text = log()
    handed = text.index(f"training.endpoint for project {project.pk} handed over")
    fresh = text.rindex("training worker on channel")
    assert text.index("grew from") < handed < text.index("replacing itself") < fresh, text
    assert text.index(done) > fresh, text
    assert PreAnnotation.objects.filter(item__project=project).count() == project.items.count()
    # The first batch was stored by the old process and not asked for again.
    asked = [item["id"] for request in model.requests for item in request.body["items"]]
    assert len(asked) == len(set(asked)) == project.items.count()


def _larger_project(user):
    """A second project whose pool sample and model grow a worker by more than 1 MB (its own
    memory stayed within 1 MB over the first project's 20 labels)."""
    second = project_create(name="Second", classes=list(WORDS))
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[i * 7 % 6]} note {i} of {i * i}" for i in range(3000)]
        add_text_items(second, lines, prefix=name)
    Membership.objects.create(project=second, user=user, role=Membership.Role.ANNOTATOR)
    return second


def _until_settled(project, user, log: Callable[[], str]) -> int:
    """Label `project` until the worker has noted its baseline; the labels given."""
    given = 0
    for _ in range(25):  # a label a second: the worker looks every CHECK_SECONDS
        given += len(label_next(project, user, 1))
        wait_until(lambda n=given: labels_used(project) == n, f"a model of {given} labels")
        if "settled at" in log():
            return given
        time.sleep(1)
    raise AssertionError(log())


def _grow_until(second, user, log: Callable[[], str], mark: str) -> None:
    """Label the larger project until the worker logs `mark`."""
    other = 0
    for _ in range(30):
        if mark in log():
            return
        other += len(label_next(second, user, 1))
        wait_until(lambda n=other: labels_used(second) == n, "the second project's model")
        time.sleep(1)
    raise AssertionError(log())


class _SwallowingLayer(InMemoryChannelLayer):
    """An in-memory layer whose blocking receive swallows the first cancellation, as a
    receive from Redis did with messages flowing (redis-py 8.2 under channels-redis 4.3; the
    reproduction is in `benchmarks/README.md`)."""

    swallowed = False

    async def receive(self, channel: str) -> dict:
        while True:
            try:
                return await super().receive(channel)
            except asyncio.CancelledError:
                if self.swallowed:
                    raise
                self.swallowed = True


class _Outgrown(MemoryCeiling):
    def exceeded(self, runs: int, rss: int) -> bool:
        return True


@pytest.mark.django_db(transaction=True)
def test_a_worker_replacing_itself_does_not_wait_for_a_receive_that_swallowed_its_cancel(
    monkeypatch,
):
    """Under a team at full speed the retiring worker never replaced itself: it waited for
    its listener, whose receive had swallowed the cancellation, and went on training."""
    replaced = []
    monkeypatch.setattr(recycling, "replace_process", lambda: replaced.append(True))
    monkeypatch.setattr(recycling, "STOP_SECONDS", 0.5)
    layer = _SwallowingLayer()
    worker = TrainingWorker(
        training_application(),
        [TRAINING_CHANNEL],
        layer,
        sweep_seconds=3600,
        ceiling=_Outgrown(1, job_grace=0),
    )
    try:
        asyncio.run(asyncio.wait_for(worker.handle(), 15))
    finally:
        recycling._retiring.clear()
        recycling._handing_over.clear()
    assert layer.swallowed
    assert replaced == [True]
