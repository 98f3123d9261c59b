"""The current model's prediction for every item (`curation.predictions`): one row per item
with the model version, a history row whenever an item's predicted labels change, and runs
that are due only when the model is newer and has learnt a share more labels."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from benchmarks.label_errors import build_project, label_items, tweets_examples
from curation import predictions, trainer
from curation.analysis_runs import last_done
from curation.jobs import analysis_run_inline
from curation.models import AnalysisRun, ItemPrediction, PredictionChange, ProjectTraining

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("data_dir")]

KIND = AnalysisRun.Kind.PREDICTIONS


@pytest.fixture(autouse=True)
def no_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}


@pytest.fixture
def project():
    """120 demo tweets, the first 40 labelled with their crowd labels."""
    split = tweets_examples(120)
    project, truth = build_project(split, "Predicted")
    ids = sorted(truth)
    label_items(project, {i: truth[i] for i in ids[:40]})
    project.truth, project.ids = truth, ids
    return project


def current_version(project) -> int:
    return ProjectTraining.objects.get(project=project).current_version.version


def test_no_model_no_predictions_due(project):
    assert not predictions.is_due(project, None)
    run = analysis_run_inline(project, KIND)
    assert run.status == AnalysisRun.Status.DONE
    assert run.message == "No model yet: label a few items first."
    assert not ItemPrediction.objects.exists()


def test_every_item_gets_the_current_models_prediction_and_a_first_history_row(project):
    trainer.train(project.pk, announce=False)
    version = current_version(project)
    assert predictions.is_due(project, None)

    run = analysis_run_inline(project, KIND)

    assert run.status == AnalysisRun.Status.DONE and run.model_version == version
    rows = {p.item_id: p for p in ItemPrediction.objects.filter(project=project)}
    assert set(rows) == set(project.ids)
    for row in rows.values():
        assert row.version == version
        assert row.labels == [row.label] and row.label in ("negative", "neutral", "positive")
        assert 1 / 3 <= row.confidence <= 1.0
    assert PredictionChange.objects.filter(project=project).count() == 120
    assert run.result["items"] == 120 and run.result["changed"] == 120
    assert not predictions.is_due(project, last_done(project, KIND))


def test_a_newer_model_keeps_history_only_for_the_items_whose_prediction_changed(project):
    trainer.train(project.pk, announce=False)
    analysis_run_inline(project, KIND)
    before = dict(ItemPrediction.objects.values_list("item_id", "labels"))

    label_items(project, {i: project.truth[i] for i in project.ids[40:100]}, username="more")
    trainer.train(project.pk, announce=False)
    version = current_version(project)
    assert predictions.is_due(project, last_done(project, KIND))
    run = analysis_run_inline(project, KIND)

    after = dict(ItemPrediction.objects.values_list("item_id", "labels"))
    moved = {i for i in after if after[i] != before[i]}
    assert run.result["changed"] == len(moved)
    assert (
        set(PredictionChange.objects.filter(version=version).values_list("item_id", flat=True))
        == moved
    )
    assert set(ItemPrediction.objects.values_list("version", flat=True)) == {version}
    for item_id in moved:
        history = list(PredictionChange.objects.filter(item_id=item_id).order_by("version"))
        assert [h.labels for h in history] == [before[item_id], after[item_id]]


def test_predictions_are_due_when_a_newer_model_learnt_a_share_more_labels(project):
    trainer.train(project.pk, announce=False)
    analysis_run_inline(project, KIND)
    last = last_done(project, KIND)
    label_items(project, {i: project.truth[i] for i in project.ids[40:45]}, username="few")
    trainer.train(project.pk, announce=False)
    assert current_version(project) > last.model_version
    assert not predictions.is_due(project, last)  # 45 labels < 40 × 1.25
    label_items(project, {i: project.truth[i] for i in project.ids[45:50]}, username="enough")
    trainer.train(project.pk, announce=False)
    assert predictions.is_due(project, last)


def test_predict_items_command_predicts_every_item(project, capsys):
    trainer.train(project.pk, announce=False)
    call_command("predict_items", "Predicted", "--no-progress")
    assert ItemPrediction.objects.filter(project=project).count() == 120
    assert "120 items predicted by model v" in capsys.readouterr().out
