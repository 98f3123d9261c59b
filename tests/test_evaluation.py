"""The evaluation slice (test-then-train) and the model's suggestions on the annotate page."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from annotations import queue
from annotations.models import Item, Membership, Project
from annotations.services import project_create
from curation import trainer
from curation.learner import wilson_interval
from curation.models import EvalSample, ProjectTraining
from tests.conftest import add_text_items, make_user, submit_handed_out

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


@pytest.fixture
def setup(db) -> tuple[Project, dict[str, list[Item]], object]:
    project = project_create(name="Eval", classes=list(WORDS))
    by_class = {}
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(40)]
        by_class[name] = add_text_items(project, lines, prefix=name)
    user = make_user("eval-annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return project, by_class, user


def label(item: Item, user, name: str) -> None:
    submit_handed_out(
        item=item, annotator=user, labels=[name], skipped=False, client_uuid=uuid.uuid4()
    )


def truth_of(item: Item) -> str:
    return item.external_id.rstrip("0123456789")


def warm_up(project, by_class, user, per_class: int = 4) -> None:
    for name, items in by_class.items():
        for item in items[:per_class]:
            label(item, user, name)
    trainer.train(project.pk)


def test_a_warm_model_predicts_a_random_slice_before_its_labels_arrive(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.1)
    warm_up(project, by_class, user)

    samples = list(EvalSample.objects.filter(project=project))
    labelled = {i.pk for items in by_class.values() for i in items[:4]}
    assert 1 <= len(samples) <= 25  # about a tenth of the 72-item ranked head
    assert all(s.resolved_at is None and s.item_id not in labelled for s in samples)
    assert all(s.predicted_by == 1 and len(s.predicted) == 1 for s in samples)
    assert all(0.5 <= s.confidence <= 1 for s in samples)
    # They are served: woven into the ranked head of the queue.
    head = set(
        Item.objects.filter(project=project, needs_annotation=True, priority__gte=1).values_list(
            "id", flat=True
        )
    )
    assert {s.item_id for s in samples} <= head


def test_about_the_evaluation_share_of_served_items_are_evaluation_items(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.2)
    trainer.reseed(7)
    warm_up(project, by_class, user)
    served = []
    for _ in range(50):
        (item,) = queue.next_items(project=project, user=user, count=1)
        served.append(EvalSample.objects.filter(item=item).exists())
        label(item, user, truth_of(item))
        trainer.train(project.pk)

    assert 4 <= sum(served) <= 18  # 10 expected; Binomial(50, 0.2) is inside with p > 0.99
    resolved = EvalSample.objects.filter(project=project, resolved_at__isnull=False)
    assert resolved.count() == sum(served)
    assert all(s.predicted_by is not None for s in resolved)


def test_a_label_on_an_evaluation_item_scores_the_prediction_made_before_it(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.1)
    warm_up(project, by_class, user)
    samples = list(EvalSample.objects.filter(project=project).select_related("item")[:3])

    for sample in samples:
        label(sample.item, user, truth_of(sample.item))
    result = trainer.train(project.pk)

    for sample in samples:
        before = sample.predicted
        sample.refresh_from_db()
        assert sample.resolved_at is not None and sample.truth == [truth_of(sample.item)]
        assert sample.correct == (before == [truth_of(sample.item)])
        assert sample.predicted == before  # the label did not change the recorded guess
    correct = sum(s.correct for s in samples)
    low, high = wilson_interval(correct, 3)
    assert result.announced["eval"] == {
        "total": 3,
        "correct": correct,
        "accuracy": correct / 3,
        "low": low,
        "high": high,
    }
    # The items joined training like any other.
    assert result.version.labels_used == 8 + 3


def test_no_evaluation_slice_when_its_share_is_zero(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    warm_up(project, by_class, user)
    assert not EvalSample.objects.filter(project=project).exists()


@pytest.mark.parametrize("mode", ["highlight", "preselect", "off"])
def test_the_annotate_page_shows_the_models_guess_except_on_evaluation_items(client, setup, mode):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0, suggestions=mode)
    warm_up(project, by_class, user)
    client.force_login(user)

    page = client.get(reverse("annotate", args=[project.pk])).content.decode()

    assert f'data-suggestions="{mode}"' in page
    assert 'id="model"' in page and "data-model-version>1<" in page
    assert ("data-suggest=" in page) == (mode != "off")
    if mode != "off":
        assert "model: <b>" in page


def test_evaluation_items_get_no_suggestion(client, setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.5)
    warm_up(project, by_class, user)
    held_out = set(EvalSample.objects.filter(project=project).values_list("item_id", flat=True))
    client.force_login(user)

    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    more = client.get(reverse("annotate_next", args=[project.pk]), {"count": 5}).content.decode()

    cards = re.findall(r'<article class="card" data-item-id="(\d+)"([^>]*)>', page + more)
    assert len(cards) >= 4 and held_out
    shown_held_out = [(int(pk), attrs) for pk, attrs in cards if int(pk) in held_out]
    others = [(int(pk), attrs) for pk, attrs in cards if int(pk) not in held_out]
    assert shown_held_out and others  # half the ranked head is evaluation items
    assert all("data-suggest" not in attrs for _, attrs in shown_held_out)
    assert all("data-suggest" in attrs for _, attrs in others)
