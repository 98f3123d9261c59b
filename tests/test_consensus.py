"""Weighted consensus (CROWDLAB): three annotators, one of them careless, on a small text project
with a known truth. CROWDLAB must find the careless one, be at least as right as the majority,
leave reviewers' decisions alone, write nothing twice, and run from the training worker."""

from __future__ import annotations

import asyncio
import io
import uuid

import numpy as np
import pytest
from asgiref.sync import async_to_sync
from channels.layers import channel_layers, get_channel_layer
from django.core.management import call_command
from django.core.management.base import CommandError

from annotations.models import GoldLabel, GoldSource, Item, Project
from annotations.review import review_decide, review_flag
from annotations.services import project_create, project_set_overlap
from curation import jobs, worker
from curation.consensus import ConsensusRefused, consensus_due, consensus_update
from curation.models import ProjectTraining
from curation.services import train_project_once
from curation.training_requests import TRAINING_CHANNEL
from dataprep_site.env import channel_layers_for
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

VOCAB = {
    "cat": "meow purr whiskers kitten claws litter tabby feline",
    "dog": "bark woof puppy leash fetch kennel bone canine",
    "bird": "tweet wings feather nest beak chirp flock egg",
}
CLASSES = list(VOCAB)
NOISE = ["the", "a", "big", "small", "old", "new", "red", "blue", "happy", "sad", "quick", "slow"]
#: Each annotator's chance of giving the true class; otherwise one of the others at random.
ACCURACY = {"careful": 0.9, "steady": 0.8, "careless": 0.3}


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


def make_project(name: str = "Pets", *, n: int = 45, seed: int = 0) -> tuple[Project, dict]:
    """A crowdlab project of `n` texts, every one answered by the three annotators of
    ACCURACY; returns it with the true class of each item id."""
    rng = np.random.default_rng(seed)
    project = project_create(name=name, classes=CLASSES, overlap=3)
    Project.objects.filter(pk=project.pk).update(consensus=Project.Consensus.CROWDLAB)
    project.refresh_from_db()
    classes_in_order = [CLASSES[i % len(CLASSES)] for i in range(n)]
    texts = []
    for true_class in classes_in_order:
        words = [*rng.choice(VOCAB[true_class].split(), 2), *rng.choice(NOISE, 3)]
        texts.append(" ".join(rng.permutation(words)))
    items = add_text_items(project, texts)
    truth = dict(zip([item.pk for item in items], classes_in_order, strict=True))
    for username, accuracy in ACCURACY.items():
        user = make_user(f"{username}-{project.pk}")
        for item in items:
            right = truth[item.pk]
            given = (
                right if rng.random() < accuracy else rng.choice([c for c in CLASSES if c != right])
            )
            answer(item, user, str(given))
    return project, truth


def answer(item: Item, user, name: str) -> None:
    submit_handed_out(item=item, annotator=user, labels=[name], client_uuid=uuid.uuid4())


def gold_accuracy(project: Project, truth: dict) -> float:
    """Share of the items whose gold label is the true class (a tie counts as wrong)."""
    gold = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "labels"))
    return sum(gold.get(i) == [t] for i, t in truth.items()) / len(truth)


def quality_by_role(result) -> dict[str, float]:
    """Annotator quality keyed by the role in ACCURACY (usernames are "<role>-<project id>")."""
    return {row["username"].split("-")[0]: row["quality"] for row in result.annotator_quality}


def quality_by_role_of(training: ProjectTraining) -> list[str]:
    """The roles in the stored quality table, lowest quality first."""
    return [row["username"].split("-")[0] for row in training.annotator_quality]


@pytest.mark.django_db
def test_crowdlab_ranks_the_careless_annotator_lowest_and_is_more_accurate_than_the_majority():
    project, truth = make_project()
    train_project_once(project)
    majority = gold_accuracy(project, truth)

    result = consensus_update(project)

    assert result.method == "crowdlab", result.reason
    assert result.pred_probs.startswith("cross-validated")
    assert (result.items, result.annotators, result.answers) == (len(truth), 3, 3 * len(truth))
    quality = quality_by_role(result)
    assert min(quality, key=quality.get) == "careless"
    assert gold_accuracy(project, truth) >= majority
    consensus = GoldLabel.objects.filter(project=project, source=GoldSource.CONSENSUS)
    assert consensus.count() == len(truth)
    stored = ProjectTraining.objects.get(project=project)
    assert stored.annotator_quality == result.annotator_quality
    assert stored.annotator_quality[0]["worst_class"] in CLASSES
    assert stored.consensus_answers == 3 * len(truth)
    assert stored.consensus_at is not None and stored.consensus_note == ""


@pytest.mark.django_db
def test_reviewer_decisions_are_never_overwritten_by_the_consensus():
    project, truth = make_project()
    reviewer = make_user("rev")
    decided = {}
    for item in Item.objects.filter(project=project).order_by("id")[:3]:
        review = review_flag(item=item, user=reviewer)
        # A class the consensus will not pick: the decision must win all the same.
        wrong = next(c for c in CLASSES if c != truth[item.pk])
        review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=[wrong])
        decided[item.pk] = [wrong]
    train_project_once(project)

    result = consensus_update(project)

    assert result.method == "crowdlab" and result.adjudicated == 3
    for item_id, labels in decided.items():
        gold = GoldLabel.objects.get(item_id=item_id)
        assert (gold.labels, gold.source) == (labels, GoldSource.ADJUDICATED)


@pytest.mark.django_db
def test_a_second_run_on_unchanged_answers_rewrites_nothing():
    project, _ = make_project()
    train_project_once(project)
    out = io.StringIO()
    call_command("consensus", str(project.pk), stdout=out)
    assert "CROWDLAB consensus over" in out.getvalue()
    assert out.getvalue().index("careless") < out.getvalue().index("careful")  # lowest first
    before = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "updated_at"))

    result = consensus_update(project)

    assert result.method == "crowdlab" and result.changed == 0
    after = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "updated_at"))
    assert after == before


@pytest.mark.django_db
def test_multi_label_and_majority_projects_are_refused_with_a_clear_error():
    multi = project_create(name="Tags", classes=CLASSES, labeling_mode=Project.LabelingMode.MULTI)
    Project.objects.filter(pk=multi.pk).update(consensus=Project.Consensus.CROWDLAB)
    multi.refresh_from_db()
    with pytest.raises(ConsensusRefused, match="single-label projects only"):
        consensus_update(multi)
    with pytest.raises(CommandError, match="single-label projects only"):
        call_command("consensus", str(multi.pk))
    assert not consensus_due(multi)

    plain = project_create(name="Plain", classes=CLASSES)
    with pytest.raises(ConsensusRefused, match="CROWDLAB"):
        consensus_update(plain)


@pytest.mark.django_db
def test_without_a_model_or_a_second_annotator_it_keeps_the_majority_and_says_why():
    project = project_create(name="Solo", classes=CLASSES, overlap=1)
    Project.objects.filter(pk=project.pk).update(consensus=Project.Consensus.CROWDLAB)
    project.refresh_from_db()
    items = add_text_items(
        project, [f"{VOCAB[c].split()[i]} text" for i in range(4) for c in CLASSES]
    )
    solo = make_user("solo")
    for item, name in zip(items, CLASSES * 4, strict=True):
        answer(item, solo, name)
    majority = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "labels"))

    result = consensus_update(project)
    assert result.method == "majority"
    assert result.reason == "fewer than two annotators have answered"

    second = make_user("second")
    project = project_set_overlap(project, 2)  # so the queue hands the item to a second person
    answer(items[0], second, CLASSES[1])
    result = consensus_update(project)
    assert (result.method, result.reason) == (
        "majority",
        "no trained model for the current label schema yet",
    )
    assert ProjectTraining.objects.get(project=project).consensus_note == result.reason
    gold = dict(GoldLabel.objects.filter(project=project).values_list("item_id", "labels"))
    assert {i: g for i, g in gold.items() if i != items[0].pk} == {
        i: g for i, g in majority.items() if i != items[0].pk
    }
    assert not GoldLabel.objects.filter(project=project, source=GoldSource.CONSENSUS).exists()


def _queued_jobs() -> list[dict]:
    """The messages waiting on the (in-memory) training channel."""
    layer = get_channel_layer()
    found = []
    while True:
        try:
            found.append(async_to_sync(asyncio.wait_for)(layer.receive(TRAINING_CHANNEL), 0.2))
        except TimeoutError:
            return found


@pytest.mark.django_db(transaction=True)
def test_the_training_worker_runs_the_consensus_as_a_job_once(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    project, _ = make_project()
    channel_layers.backends.clear()  # a fresh channel, without the answers' wake-up calls
    assert consensus_due(project)

    worker.handle_request(project.pk)  # trains, then queues its due follow-up jobs

    queued = [m for m in _queued_jobs() if m["type"] in jobs.JOB_TYPES]
    assert {"type": jobs.CONSENSUS, "project_id": project.pk} in queued
    for message in queued:
        jobs.job_run(message)
    training = ProjectTraining.objects.get(project=project)
    assert training.consensus_at is not None
    assert quality_by_role_of(training)[0] == "careless"
    assert GoldLabel.objects.filter(project=project, source=GoldSource.CONSENSUS).exists()
    assert not consensus_due(project)
    # The changed gold rows retrain the model, and that run starts no second consensus.
    _queued_jobs()
    assert worker.handle_request(project.pk) is not None
    assert jobs.CONSENSUS not in [m["type"] for m in _queued_jobs()]
    assert ProjectTraining.objects.get(project=project).consensus_at == training.consensus_at
    channel_layers.backends.clear()


@pytest.mark.django_db
def test_a_consensus_that_changes_gold_labels_asks_for_training_at_once(settings):
    settings.CHANNEL_LAYERS = channel_layers_for(None)
    channel_layers.backends.clear()
    project, _ = make_project()
    train_project_once(project)

    result = consensus_update(project)

    assert result.changed > 0
    layer = get_channel_layer()
    message = async_to_sync(asyncio.wait_for)(layer.receive(TRAINING_CHANNEL), timeout=2)
    assert message == {"type": "training.request", "project_id": project.pk}
    channel_layers.backends.clear()
