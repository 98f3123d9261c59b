"""A training worker that has outgrown its memory ceiling replaces itself with a fresh process
(`curation.recycling`), without losing a label: the real `manage.py trainworker`, a private
Redis and the test database, as in `tests/test_faults.py`."""

from __future__ import annotations

import time

import pytest

from annotations.models import Membership
from annotations.services import project_create
from curation.recycling import MemoryCeiling, rss_bytes
from tests.conftest import add_text_items
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

MIB = 2**20


def test_the_ceiling_is_measured_from_the_memory_the_worker_settled_at():
    ceiling = MemoryCeiling(100 * MIB, settle_runs=10, settle_seconds=3600)
    assert not ceiling.exceeded(9, 900 * MIB)  # still loading what it needs: no baseline
    assert not ceiling.exceeded(10, 300 * MIB)  # settled: the baseline
    assert ceiling.baseline == 300 * MIB
    assert not ceiling.exceeded(500, 400 * MIB)
    assert ceiling.exceeded(501, 401 * MIB)
    assert not MemoryCeiling(MIB, settle_runs=1).exceeded(5, 0)  # no /proc: never


def test_a_worker_whose_runs_are_few_settles_after_a_while_all_the_same():
    """Under a team at full speed the worker's runs are paced and get the CPU last: it must
    not wait for its 50th run to measure anything."""
    slow = MemoryCeiling(100 * MIB, settle_runs=50, settle_seconds=0)
    assert not slow.exceeded(0, 300 * MIB)  # nothing loaded yet
    assert not slow.exceeded(3, 300 * MIB) and slow.baseline == 300 * MIB
    assert slow.exceeded(7, 401 * MIB)


def test_this_process_reads_its_resident_memory():
    assert 10 * MIB < rss_bytes() < 10_000 * MIB


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("fast_passwords")
def test_a_worker_past_its_ceiling_replaces_itself_and_the_fresh_one_keeps_training(
    texts,  # noqa: F811 (fixtures from tests.test_faults)
    annie,  # noqa: F811
    private_redis,  # noqa: F811
    use_layer,  # noqa: F811
    processes,  # noqa: F811
):
    project = texts
    use_layer(private_redis.url)
    worker = processes.start(
        ["manage.py", "trainworker", "--sweep-seconds", "3600"]
        + ["--max-memory-growth", "1", "--settle-runs", "2"],
        child_env(processes.tmp_path, REDIS_URL=private_redis.url),
    )
    # It settles on one project; a second one's pool sample and model grow it by more than
    # 1 MB (a worker's own memory stayed within 1 MB over this project's 20 labels).
    second = project_create(name="Second", classes=list(WORDS))
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[i * 7 % 6]} note {i} of {i * i}" for i in range(3000)]
        add_text_items(second, lines, prefix=name)
    Membership.objects.create(project=second, user=annie, role=Membership.Role.ANNOTATOR)

    given = 0
    for _ in range(25):  # a label a second: the worker looks every CHECK_SECONDS
        given += len(label_next(project, annie, 1))
        wait_until(lambda n=given: labels_used(project) == n, f"a model of {given} labels")
        if "settled at" in processes.log(worker):
            break
        time.sleep(1)
    other = 0
    for _ in range(30):
        if "replacing itself" in processes.log(worker):
            break
        other += len(label_next(second, annie, 1))
        wait_until(lambda n=other: labels_used(second) == n, "the second project's model")
        time.sleep(1)
    wait_until(
        lambda: processes.log(worker).count("training worker on channel") == 2,
        "the fresh process listening",
    )
    assert worker.poll() is None, processes.log(worker)  # the same process, executed again

    given += len(label_next(project, annie, 2))  # their wake-ups reach the fresh process
    wait_until(lambda: labels_used(project) == given, "training by the fresh process")
    assert "grew from" in processes.log(worker)
