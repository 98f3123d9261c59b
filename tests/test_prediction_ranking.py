"""Cold start from a team's own predictions: until our model has seen every class, the queue
serves first the items the imported predictions are least sure of
(`curation.prediction_ranking`)."""

from __future__ import annotations

import uuid

import pytest

from annotations import queue
from annotations.models import Item, Membership
from annotations.preannotations import PredictionIn, predictions_save
from annotations.services import project_create
from curation import trainer
from curation.models import ProjectTraining
from curation.prediction_ranking import prediction_uncertainty
from tests.conftest import add_text_items, make_user, submit_handed_out


def test_uncertainty_is_one_minus_the_margin_or_the_score():
    assert prediction_uncertainty(["a"], {"a": 0.5, "b": 0.5}, None, multi_label=False) == 1.0
    assert prediction_uncertainty(["a"], {"a": 0.9, "b": 0.1}, 0.99, multi_label=False) == (
        pytest.approx(0.2)
    )
    assert prediction_uncertainty(["a"], {"a": 0.7}, None, multi_label=False) == pytest.approx(0.6)
    assert prediction_uncertainty(["a"], None, 0.8, multi_label=False) == pytest.approx(0.2)
    assert prediction_uncertainty(["a"], None, None, multi_label=False) < 0
    multi = prediction_uncertainty(["a"], {"a": 0.95, "b": 0.45}, None, multi_label=True)
    assert multi == pytest.approx(0.9)  # b is undecided


@pytest.fixture
def predicted(db, data_dir):
    """40 items; 30 with a prediction whose margin grows with the item's number (the first is
    the least sure), 10 without one."""
    project = project_create(name="Cold", classes=["pos", "neg", "neu"])
    items = add_text_items(project, [f"text number {i} about things" for i in range(40)])
    for i, item in enumerate(items):  # the import's random order: here the last item first
        Item.objects.filter(pk=item.pk).update(priority=0.5 + i * 0.001)
    ProjectTraining.objects.create(project=project, exploration=0.0, eval_share=0.0)
    rows = []
    for i, item in enumerate(items[:30]):
        top = 0.51 + i * 0.015
        scores = {"pos": round(top, 3), "neg": round(1 - top, 3)}
        rows.append((item.pk, PredictionIn("team", ("pos",), scores, None)))
    # A second model, surer, on the same items: the least sure model counts.
    rows_b = [(item.pk, PredictionIn("other", ("pos",), None, 0.99)) for item in items[:30]]
    predictions_save(project, rows + rows_b)
    user = make_user("cold-annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return project, items, user


def head(project) -> list[str]:
    ranked = Item.objects.filter(project=project, needs_annotation=True, priority__gte=1.0)
    return list(ranked.order_by("-priority").values_list("external_id", flat=True))


def test_before_any_label_the_queue_serves_the_least_sure_predictions_first(predicted):
    project, items, user = predicted
    before = [
        i.external_id for i in queue.next_items(project=project, user=make_user("x"), count=5)
    ]

    assert trainer.train(project.pk) is None  # no label: no model, but a ranking
    ranked = head(project)

    by_margin = [f"t{i}" for i in range(30)]  # margin grows with i: least sure first
    assert ranked == by_margin
    assert before != by_margin[:5]  # the import's random order was not already this one
    served = queue.next_items(project=project, user=user, count=5)
    assert [i.external_id for i in served] == by_margin[:5]


def test_a_cold_model_ranks_by_the_predictions_and_a_warm_one_by_itself(predicted):
    project, items, user = predicted
    for item, name in ((items[39], "pos"), (items[38], "neg")):  # two of three classes
        submit_handed_out(item=item, annotator=user, labels=[name], client_uuid=uuid.uuid4())
    result = trainer.train(project.pk)
    assert result.version.metrics["cold"] is True
    ranked = head(project)
    assert ranked[:30] == [f"t{i}" for i in range(30)]  # the predictions' least sure first
    assert set(ranked[30:]) == {f"t{i}" for i in range(30, 38)}  # then our model's head

    submit_handed_out(item=items[37], annotator=user, labels=["neu"], client_uuid=uuid.uuid4())
    result = trainer.train(project.pk)
    assert result.version.metrics["cold"] is False
    ranked = head(project)
    assert len(ranked) == 37  # every open item, ranked by our model now
    assert ranked[:30] != [f"t{i}" for i in range(30)]


def test_new_predictions_rerank_an_unlabelled_queue_once(predicted):
    project, items, user = predicted
    trainer.train(project.pk)
    assert head(project)[0] == "t0"
    predictions_save(
        project, [(items[35].pk, PredictionIn("team", ("neu",), {"neu": 0.34, "pos": 0.33}, None))]
    )
    trainer.train(project.pk)
    assert head(project)[0] == "t35"
