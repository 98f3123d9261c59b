"""The model's guess on the annotate page, stored on the items by the training worker with the
ranking (`curation.ranking_write`) and read from the rows by the page (`curation.suggest`)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
from django.db import connection
from django.urls import reverse

from annotations.models import Item, Membership, Project
from annotations.services import project_create
from curation import trainer
from curation.models import EvalSample, ProjectTraining, models_dir
from curation.ranking_write import head_suggestions, ranking_write
from curation.suggest import SUGGESTION_MAX_AGE, item_suggestion, suggestions_for
from tests.conftest import add_text_items, make_user, submit_handed_out

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
}
CARD = re.compile(r'<article class="card" data-item-id="(\d+)"([^>]*)>')


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


@pytest.fixture
def setup(db) -> tuple[Project, dict[str, list[Item]], object]:
    project = project_create(name="Suggest", classes=list(WORDS))
    by_class = {}
    for name, words in WORDS.items():
        vocab = words.split()
        lines = [f"{vocab[i % 6]} {vocab[(i + 1) % 6]} thing {i}" for i in range(30)]
        by_class[name] = add_text_items(project, lines, prefix=name)
    user = make_user("suggest-annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    return project, by_class, user


def label(project, by_class, user, per_class: int) -> None:
    for name, items in by_class.items():
        for item in items[:per_class]:
            submit_handed_out(
                item=item, annotator=user, labels=[name], skipped=False, client_uuid=uuid.uuid4()
            )


def cards(page: str) -> dict[int, str]:
    return {int(pk): attrs for pk, attrs in CARD.findall(page)}


def next_cards(client, project, count: int = 4) -> dict[int, str]:
    url = reverse("annotate_next", args=[project.pk])
    return cards(client.get(url, {"count": count}).content.decode())


def test_a_warm_model_stores_its_guess_on_the_items_it_ranks(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)

    result = trainer.train(project.pk)

    head = Item.objects.filter(project=project, needs_annotation=True, priority__gte=1.0)
    assert head.count() == result.ranked > 0
    for item in head:
        assert item.suggestion_version == result.version.version
        assert item.suggestion["labels"] in (["positive"], ["negative"])
        assert 0.5 <= item.suggestion["p"] <= 1
    # The guess is the model's: mostly the item's own class on these separable texts.
    right = sum(i.suggestion["labels"] == [i.external_id.rstrip("0123456789")] for i in head)
    assert right >= 0.8 * head.count()


def test_the_page_shows_the_stored_guess_without_loading_a_model(client, setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)
    trainer.train(project.pk)
    # No model file to read: the guess can only come from the item rows.
    shutil.rmtree(models_dir())
    client.force_login(user)

    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    shown = cards(page) | next_cards(client, project)

    assert len(shown) >= 3
    for pk, attrs in shown.items():
        suggested = re.search(r'data-suggest="([^"]*)"', attrs)
        assert suggested, attrs
        stored = Item.objects.get(pk=pk).suggestion
        assert json.loads(html.unescape(suggested.group(1))) == stored["labels"]
    assert "model: <b>" in page


def label_classes(by_class, user, names: list[str]) -> None:
    for name in names:
        submit_handed_out(
            item=by_class[name][0], annotator=user, labels=[name], client_uuid=uuid.uuid4()
        )


def test_no_guess_while_the_model_is_cold(client, setup):
    """One class labelled: the model cannot rank, stores no guess and the page shows none (a
    model that has seen two of three classes stores guesses but shows none: test_training)."""
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    name = next(iter(by_class))
    submit_handed_out(
        item=by_class[name][0], annotator=user, labels=[name], client_uuid=uuid.uuid4()
    )

    metrics = trainer.train(project.pk).version.metrics
    assert (metrics["cold"], metrics["ranking"]) == (True, False)
    assert not Item.objects.filter(project=project, suggestion__isnull=False).exists()
    client.force_login(user)
    shown = next_cards(client, project)
    assert shown and all("data-suggest" not in attrs for attrs in shown.values())


def test_a_guess_from_too_many_versions_ago_is_not_shown(client, setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)
    number = trainer.train(project.pk).version.version
    head = Item.objects.filter(project=project, needs_annotation=True, priority__gte=1.0)
    ids = list(head.order_by("-priority").values_list("id", flat=True)[:4])
    Item.objects.filter(pk__in=ids[:2]).update(suggestion_version=number - SUGGESTION_MAX_AGE)
    Item.objects.filter(pk__in=ids[2:]).update(suggestion_version=number - SUGGESTION_MAX_AGE + 1)

    mode, shown = suggestions_for(project, list(Item.objects.filter(pk__in=ids)))

    assert mode == "highlight"
    assert set(shown) == set(ids[2:])


def test_open_evaluation_items_get_no_stored_guess(setup):
    project, by_class, user = setup
    training = ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)
    trainer.train(project.pk)
    guessed = set(
        Item.objects.filter(project=project, suggestion__isnull=False).values_list("id", flat=True)
    )
    training.eval_share = 0.5
    training.save(update_fields=["eval_share"])

    label(project, {"positive": by_class["positive"][4:5]}, user, per_class=1)
    trainer.train(project.pk)

    held_out = set(
        EvalSample.objects.filter(project=project, resolved_at=None).values_list(
            "item_id", flat=True
        )
    )
    assert held_out & guessed  # items that had a guess before they were drawn
    assert not Item.objects.filter(pk__in=held_out, suggestion__isnull=False).exists()
    assert Item.objects.filter(project=project, suggestion__isnull=False).exists()


def test_suggestions_cost_the_page_no_query_beyond_reading_the_mode(client, setup):
    project, by_class, user = setup
    training = ProjectTraining.objects.create(project=project, eval_share=0.5)
    label(project, by_class, user, per_class=4)
    trainer.train(project.pk)
    client.force_login(user)
    next_cards(client, project)  # lease the cards once: the counts below are steady-state

    def queries(mode: str) -> int:
        training.suggestions = mode
        training.save(update_fields=["suggestions"])
        seen: list[str] = []

        def count(execute, sql, *args):
            seen.append(sql)
            return execute(sql, *args)

        with connection.execute_wrapper(count):
            shown = next_cards(client, project)
        assert ("data-suggest" in "".join(shown.values())) == (mode != "off")
        return len(seen)

    assert queries("highlight") == queries("off")


def test_the_workers_guess_is_the_one_suggest_computes_from_probabilities():
    classes = ["a", "b", "c"]
    proba = np.array([[0.2, 0.7, 0.1], [0.6, 0.55, 0.1], [0.34, 0.33, 0.33]])
    sample_ids = [10, 11, 12]

    single = head_suggestions(classes, (sample_ids, proba), [12, 99, 10], multi_label=False)
    multi = head_suggestions(classes, (sample_ids, proba), [11], multi_label=True)

    assert [json.loads(s) if s else None for s in single] == [
        item_suggestion(classes, proba[2], multi_label=False),
        None,  # not in the scored sample
        {"labels": ["b"], "p": 0.7},
    ]
    assert json.loads(multi[0]) == {"labels": ["a", "b"], "p": 0.55}
    assert head_suggestions(classes, None, [10], multi_label=False) == [None]


PROBE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataprep_site.settings")
import dataprep_site.asgi
from django.urls import get_resolver
get_resolver().url_patterns  # every view module, as the first request imports them
heavy = ("numpy", "scipy", "sklearn", "pandas", "statsmodels", "matplotlib", "curation.trainer")
print(" ".join(m for m in heavy if m in sys.modules))
"""


def test_a_server_process_starts_without_the_model_machinery(tmp_path):
    """With an external training worker a server never trains; the annotate page reads stored
    guesses; so a server process loads neither the numerical libraries nor the trainer until
    a page needs them (the reviewer's prediction, the quality report): ~130 MB less each."""
    env = {
        **os.environ,
        "TRAINING_WORKER": "external",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "sqlite:///" + str(tmp_path / "probe.sqlite3"),
    }
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_an_item_the_run_did_not_score_keeps_its_guess_and_its_age(setup):
    project, by_class, user = setup
    ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)
    number = trainer.train(project.pk).version.version
    item = Item.objects.filter(project=project, suggestion__isnull=False).first()
    before = item.suggestion

    # Sent back to the random part of the queue by a later run that did not score it.
    ranking_write(project, [item.pk], [0.5], [None], version=number + 1)

    item.refresh_from_db()
    assert (item.priority, item.suggestion, item.suggestion_version) == (0.5, before, number)


# --- Imported predictions as suggestions --------------------------------------------------------


def predict(project, items, label: str, *, model: str = "team-bert", score: float = 0.8) -> None:
    from annotations.preannotations import PredictionIn, predictions_save

    predictions_save(project, [(i.pk, PredictionIn(model, (label,), None, score)) for i in items])


def test_an_imported_prediction_is_shown_when_our_model_has_no_guess(client, setup):
    project, by_class, user = setup
    predict(project, Item.objects.filter(project=project), "negative", model="team-bert")
    client.force_login(user)

    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    shown = cards(page) | next_cards(client, project)

    assert shown  # no label yet: our model has no guess; the team's model's is shown, named
    for attrs in shown.values():
        assert json.loads(html.unescape(re.search(r'data-suggest="([^"]*)"', attrs).group(1))) == [
            "negative"
        ]
    assert "team-bert: <b>negative</b> 80%" in page
    assert "model: <b>" not in page


def test_no_imported_prediction_on_evaluation_items(client, setup):
    project, by_class, user = setup
    items = list(Item.objects.filter(project=project).order_by("-priority")[:6])
    predict(project, items, "positive")
    EvalSample.objects.bulk_create([EvalSample(project=project, item=i) for i in items[:3]])

    mode, shown = suggestions_for(project, items)

    assert set(shown) == {i.pk for i in items[3:]}
    assert all(s["model"] == "team-bert" and s["labels"] == ["positive"] for s in shown.values())
    client.force_login(user)
    served = next_cards(client, project, count=6)
    for pk in (i.pk for i in items[:3]):
        assert "data-suggest" not in served.get(pk, "")


def test_the_project_chooses_whose_guess_wins(setup):
    project, by_class, user = setup
    training = ProjectTraining.objects.create(project=project, eval_share=0.0)
    label(project, by_class, user, per_class=4)
    trainer.train(project.pk)
    head = list(
        Item.objects.filter(project=project, needs_annotation=True, suggestion__isnull=False)[:4]
    )
    predict(project, head[:2], "positive", model="rules", score=0.99)
    own = {i.pk: i.suggestion for i in head}

    _, shown = suggestions_for(project, head)
    assert {pk: s["labels"] for pk, s in shown.items()} == {
        pk: s["labels"] for pk, s in own.items()
    }
    assert not any("model" in s for s in shown.values())

    training.suggestion_source = "predictions"
    training.save(update_fields=["suggestion_source"])
    _, shown = suggestions_for(project, head)
    assert [shown[i.pk].get("model") for i in head] == ["rules", "rules", None, None]

    training.suggestion_source = "model_only"
    training.save(update_fields=["suggestion_source"])
    Item.objects.filter(pk=head[0].pk).update(suggestion=None)
    _, shown = suggestions_for(project, list(Item.objects.filter(pk__in=[i.pk for i in head])))
    assert head[0].pk not in shown


def test_imported_predictions_are_never_answers_or_gold(setup):
    from annotations.models import Annotation, GoldLabel

    project, by_class, user = setup
    predict(project, Item.objects.filter(project=project), "negative")
    assert not Annotation.objects.filter(project=project).exists()
    assert not GoldLabel.objects.filter(project=project).exists()
    assert trainer.train(project.pk) is None  # nothing to learn from: no human label


def test_a_project_admin_sets_the_suggestion_source_on_the_settings_page(client, project):
    admin = make_user("source-admin")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    url = reverse("project_settings", args=[project.pk])
    assert 'name="training-suggestion_source"' in client.get(url).content.decode()
    data = {
        "description": "",
        "instructions": project.instructions,
        "overlap": "1",
        "review_threshold": "0.66",
        "review_model_confidence": "",
        "consensus": "majority",
        "quality_threshold": "0.7",
        "training-strategy": "margin",
        "training-exploration": "0.1",
        "training-eval_share": "0.05",
        "training-suggestions": "highlight",
        "training-suggestion_source": "predictions",
        "training-snapshot_every": "",
        "training-split_validation": "0.1",
        "training-split_test": "0.1",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ProjectTraining.objects.get(project=project).suggestion_source == "predictions"
    response = client.post(url, {**data, "training-suggestion_source": "nobody"})
    assert response.status_code == 400
    assert ProjectTraining.objects.get(project=project).suggestion_source == "predictions"
