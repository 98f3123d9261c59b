"""Training from the database: versions, skipping unchanged labels, model files, majority labels,
queue re-ranking after a warm model, image projects, and two trainers racing on one project."""

from __future__ import annotations

import io
import threading
import time
import uuid

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.db import connection
from django.urls import reverse
from PIL import Image

from annotations.models import Item, Project, Review
from annotations.review import review_decide
from annotations.services import add_items_counted, project_create
from curation import artifacts
from curation.featurizers import featurizer_for
from curation.models import ModelVersion, ProjectTraining
from curation.services import current_model, train_project_once
from curation.strategies import margin
from curation.suggest import suggestions_for
from tests.conftest import add_text_items, make_user, submit_handed_out

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
    "neutral": "okay average fine ordinary plain middling",
}


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


def label(item: Item, user, labels: list[str], *, skipped: bool = False) -> None:
    submit_handed_out(
        item=item, annotator=user, labels=labels, skipped=skipped, client_uuid=uuid.uuid4()
    )


def items_of(project: Project) -> list[Item]:
    return list(Item.objects.filter(project=project).order_by("id"))


@pytest.fixture
def user(db):
    return make_user("trainer-annie")


@pytest.fixture
def separable(db) -> tuple[Project, dict[str, list[Item]]]:
    """~60 items in three clearly separable classes (20 each), by true class."""
    p = project_create(name="Separable", classes=["positive", "negative", "neutral"])
    by_class = {}
    for name, words in WORDS.items():
        vocab = words.split()
        texts = [f"{vocab[i % 6]} {vocab[(i + 2) % 6]} item {i}" for i in range(20)]
        by_class[name] = add_text_items(p, texts, prefix=name)
    return p, by_class


def test_a_project_has_no_model_before_its_first_label(project):
    assert train_project_once(project) is None
    assert current_model(project) is None
    assert not ModelVersion.objects.filter(project=project).exists()


def test_training_after_labels_creates_version_1_with_its_labels_and_class_balance(project, user):
    items = items_of(project)
    for item, name in zip(items, ["positive", "positive", "negative", "neutral"], strict=False):
        label(item, user, [name])
    label(items[4], user, [], skipped=True)

    version = train_project_once(project)

    assert version is not None and version.version == 1
    assert version.labels_used == 4
    assert version.class_balance == {"positive": 2, "negative": 1, "neutral": 1}
    assert version.featurizer_name == "text-hashing"
    assert version.strategy == "margin"
    training = ProjectTraining.objects.get(project=project)
    assert training.current_version == version and training.labels_seen == 4
    assert current_model(project).classes == ["positive", "negative", "neutral"]


def test_unchanged_labels_train_nothing_and_a_new_label_makes_version_2(project, user):
    items = items_of(project)
    label(items[0], user, ["positive"])
    label(items[1], user, ["negative"])
    assert train_project_once(project).version == 1

    assert train_project_once(project) is None
    assert ModelVersion.objects.filter(project=project).count() == 1

    label(items[2], user, ["neutral"])
    second = train_project_once(project)
    assert second.version == 2 and second.labels_used == 3
    assert ProjectTraining.objects.get(project=project).current_version == second


def test_an_answer_edited_in_place_retrains_even_though_the_count_is_unchanged(project, user):
    items = items_of(project)
    label(items[0], user, ["positive"])
    label(items[1], user, ["negative"])
    train_project_once(project)

    label(items[1], user, ["neutral"])  # the same annotator changes their answer

    edited = train_project_once(project)
    assert edited is not None and edited.version == 2
    assert edited.class_balance == {"positive": 1, "negative": 0, "neutral": 1}


def test_the_model_file_loads_with_a_valid_checksum_and_a_tampered_file_is_refused(
    project, user, data_dir
):
    items = items_of(project)
    label(items[0], user, ["positive"])
    label(items[1], user, ["negative"])
    version = train_project_once(project)

    path = data_dir / "models" / f"project-{project.pk}" / "v1.dpmodel"
    assert version.path == path and path.is_file()
    learner, header = artifacts.read_model_file(path)
    assert header["n_labels"] == 2
    X = featurizer_for("text").transform([items[0].text])
    np.testing.assert_allclose(current_model(project).predict_proba(X), learner.predict_proba(X))

    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(artifacts.ModelFileError, match="checksum"):
        current_model(project)


def test_a_warm_model_puts_open_items_above_one_in_uncertainty_order(separable, user):
    project, by_class = separable
    ProjectTraining.objects.create(project=project, exploration=0.0, eval_share=0.0)
    for name, items in by_class.items():
        for item in items[:4]:
            label(item, user, [name])

    started = time.perf_counter()
    version = train_project_once(project)
    elapsed = time.perf_counter() - started

    assert version.metrics["cold"] is False and version.metrics["ranked"] == 48
    open_items = list(Item.objects.filter(project=project, needs_annotation=True))
    assert len(open_items) == 48
    assert all(item.priority >= 1.0 for item in open_items)
    learner = current_model(project)
    X = featurizer_for("text").transform([item.text for item in open_items])
    scores = margin(learner.predict_proba(X))
    most_uncertain = open_items[int(np.argmax(scores))]
    assert max(open_items, key=lambda i: i.priority) == most_uncertain
    # Priorities encode the rank: sorted by priority, the scores never increase.
    by_priority = np.argsort([-i.priority for i in open_items], kind="stable")
    assert np.all(np.diff(scores[by_priority]) <= 1e-9)
    # The model learned something: it predicts the held-out items' true classes.
    truth = [name for name, items in by_class.items() for item in items[4:]]
    held_out = [item for items in by_class.values() for item in items[4:]]
    predicted = learner.predict(featurizer_for("text").transform([i.text for i in held_out]))
    assert np.mean(np.array(predicted) == np.array(truth)) > 0.8
    assert elapsed < 10


def head_of(project: Project, n: int) -> list[str]:
    return list(
        Item.objects.filter(project=project, needs_annotation=True, priority__gte=1.0)
        .order_by("-priority", "id")
        .values_list("external_id", flat=True)[:n]
    )


def test_the_queue_serves_typical_items_until_two_classes_have_labels_then_ranks(separable, user):
    """One class seen: no ranking is possible, the head is 50 typical items. Two classes: the
    model ranks, but a class is still unseen, so no suggestion yet. Every class seen:
    suggestions. The page's list of classes the model needs shrinks all along."""
    project, by_class = separable
    ProjectTraining.objects.create(project=project, exploration=0.0, eval_share=0.0)
    open_items = list(Item.objects.filter(project=project).exclude(pk=by_class["positive"][0].pk))

    label(by_class["positive"][0], user, ["positive"])
    one = train_project_once(project)

    assert (one.metrics["ranking"], one.metrics["cold"], one.metrics["ranked"]) == (False, True, 50)
    assert one.metrics["needs"] == [
        {"name": "positive", "labels": 1, "wanted": 3},
        {"name": "negative", "labels": 0, "wanted": 3},
        {"name": "neutral", "labels": 0, "wanted": 3},
    ]
    assert len(head_of(project, 100)) == 50
    assert suggestions_for(project, open_items[:5])[1] == {}

    label(by_class["negative"][0], user, ["negative"])
    two = train_project_once(project)

    assert (two.metrics["ranking"], two.metrics["cold"]) == (True, True)
    assert two.metrics["ranked"] == 58  # every open item: the model ranks the whole sample
    assert [n["name"] for n in two.metrics["needs"]] == ["positive", "negative", "neutral"]
    # A model that never saw "neutral" would call every neutral item positive or negative.
    assert suggestions_for(project, open_items[:5])[1] == {}

    label(by_class["neutral"][0], user, ["neutral"])
    three = train_project_once(project)

    assert (three.metrics["ranking"], three.metrics["cold"]) == (True, False)
    # The worker stored each ranked item's guess on its row: read the rows again.
    fresh = list(Item.objects.filter(pk__in=[i.pk for i in open_items[5:10]]))
    assert len(suggestions_for(project, fresh)[1]) == 5
    for name, items in by_class.items():
        for item in items[1:3]:
            label(item, user, [name])
    warm = train_project_once(project)
    assert warm.metrics["needs"] == []


def test_while_a_class_is_unseen_every_other_place_of_the_head_is_a_typical_item(separable, user):
    """The model cannot be unsure about a class it never saw: half the head looks for it,
    typical items first after an even number of labels, the model's picks after an odd one."""
    project, by_class = separable
    ProjectTraining.objects.create(project=project, exploration=0.0, eval_share=0.0)
    for item in by_class["positive"][:3]:
        label(item, user, ["positive"])
    for item in by_class["negative"][:3]:
        label(item, user, ["negative"])

    train_project_once(project)

    head = Item.objects.filter(project=project, needs_annotation=True).order_by("-priority", "id")
    items = list(head)
    learner = current_model(project)
    scores = margin(
        learner.predict_proba(featurizer_for("text").transform([i.text for i in items]))
    )
    # Typical items at the even places, margin's picks at the odd ones (in margin order),
    # until one of the two runs out (54 open items, 50 typical ones).
    assert np.all(np.diff(scores[1:40:2]) <= 1e-9)
    assert not np.all(np.diff(scores[:40]) <= 1e-9)
    assert items[1] == max(items, key=lambda i: scores[items.index(i)])

    # After the next label the model's pick comes first: one annotator gets one of each in turn.
    label(by_class["positive"][3], user, ["positive"])
    train_project_once(project)
    items = list(head.all())  # a fresh query: `head` caches its first results
    X = featurizer_for("text").transform([i.text for i in items])
    scores = margin(current_model(project).predict_proba(X))
    assert scores[0] == scores.max()
    assert np.all(np.diff(scores[0:40:2]) <= 1e-9)


def test_an_item_trains_on_its_gold_label_and_a_tie_waits_for_review(project, user):
    project.overlap = 3
    project.save(update_fields=["overlap"])
    others = [make_user("bob"), make_user("cy")]
    items = items_of(project)
    label(items[0], user, ["negative"])
    label(items[0], others[0], ["neutral"])
    label(items[0], others[1], ["neutral"])
    label(items[1], user, ["positive"])  # a tie on items[1]: no gold label until a decision
    label(items[1], others[0], ["negative"])
    label(items[1], others[1], ["neutral"])

    version = train_project_once(project)

    assert version.labels_used == 1
    assert version.class_balance == {"positive": 0, "negative": 0, "neutral": 1}

    review = Review.objects.get(item=items[1])
    review_decide(project=project, review_id=review.pk, reviewer=others[1], labels=["negative"])
    version = train_project_once(project)

    assert version.labels_used == 2
    assert version.class_balance == {"positive": 0, "negative": 1, "neutral": 1}


def test_multi_label_items_train_on_the_classes_most_annotators_chose(db, user):
    p = project_create(
        name="Topics", classes=["a", "b", "c"], labeling_mode=Project.LabelingMode.MULTI
    )
    p.overlap = 3
    p.save(update_fields=["overlap"])
    items = add_text_items(p, ["alpha beta", "beta gamma"])
    others = [make_user("bob"), make_user("cy")]
    for who, labels in zip([user, *others], [["a", "b"], ["a"], ["a", "c"]], strict=True):
        label(items[0], who, labels)
    label(items[1], user, ["b"])

    version = train_project_once(p)

    assert version.labels_used == 2
    assert version.class_balance == {"a": 1, "b": 1, "c": 0}


def test_admin_shows_versions_read_only_and_train_now_trains_the_selected_project(
    client, superuser, project, user
):
    client.force_login(superuser)
    items = items_of(project)
    label(items[0], user, ["positive"])
    label(items[1], user, ["negative"])
    training = ProjectTraining.objects.create(project=project, strategy="entropy")
    url = reverse("admin:curation_projecttraining_changelist")

    response = client.post(
        url, {"action": "train_now", "_selected_action": [str(training.pk)]}, follow=True
    )

    assert "trained model version 1 on 2 labels" in response.content.decode()
    version = ModelVersion.objects.get(project=project)
    assert version.strategy == "entropy"
    for name, args in [
        ("curation_modelversion_changelist", []),
        ("curation_modelversion_change", [version.pk]),
        ("curation_projecttraining_changelist", []),
        ("curation_projecttraining_change", [training.pk]),
        ("curation_projecttraining_add", []),
    ]:
        assert client.get(reverse(f"admin:{name}", args=args)).status_code == 200, name
    assert client.get(reverse("admin:curation_modelversion_add")).status_code == 403
    change = reverse("admin:curation_modelversion_change", args=[version.pk])
    client.post(change, {"labels_used": 999})
    assert ModelVersion.objects.get(pk=version.pk).labels_used == 2
    again = client.post(
        url, {"action": "train_now", "_selected_action": [str(training.pk)]}, follow=True
    )
    assert "nothing to train" in again.content.decode()


def test_admin_edits_the_strategy_and_refuses_an_exploration_outside_0_to_1(
    client, superuser, project
):
    client.force_login(superuser)
    training = ProjectTraining.objects.create(project=project)
    url = reverse("admin:curation_projecttraining_change", args=[training.pk])

    settings = {"eval_share": "0.1", "suggestions": "preselect"}
    client.post(url, {"strategy": "batch_diverse", "exploration": "0.25", **settings})
    bad = client.post(url, {"strategy": "margin", "exploration": "1.5", **settings})
    bad_share = client.post(
        url, {"strategy": "margin", "exploration": "0.1", "eval_share": "0.9", "suggestions": "off"}
    )

    training.refresh_from_db()
    assert (training.strategy, training.exploration) == ("batch_diverse", 0.25)
    assert (training.eval_share, training.suggestions) == (0.1, "preselect")
    assert bad.status_code == 200 and "less than or equal to 1" in bad.content.decode()
    assert (
        bad_share.status_code == 200 and "less than or equal to 0.5" in bad_share.content.decode()
    )


def png(colour: str, shape: str) -> bytes:
    image = Image.new("RGB", (24, 24), "white")
    pixels = image.load()
    for x in range(24):
        for y in range(24):
            if (shape == "bar" and 8 <= x < 16) or (shape == "box" and 4 <= y < 20):
                pixels[x, y] = {"red": (220, 20, 20), "blue": (20, 20, 220)}[colour]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_project_trains_on_its_image_files(db, user):
    p = project_create(name="Shapes", item_kind=Project.ItemKind.IMAGE, classes=["red", "blue"])
    items = []
    for i in range(8):
        colour = "red" if i % 2 else "blue"
        item = Item(project=p, external_id=f"{i}.png", image_format="PNG")
        item.image.save(f"{i}.png", ContentFile(png(colour, "bar" if i < 4 else "box")), save=False)
        item.save()
        items.append((item, colour))
    add_items_counted(p, len(items))
    p.refresh_from_db()
    for item, colour in items[:6]:
        label(item, user, [colour])

    version = train_project_once(p)

    assert version.featurizer_name == "image-pixels"
    assert version.labels_used == 6 and version.class_balance == {"red": 3, "blue": 3}
    learner = current_model(p)
    data = [items[6][0].image.open("rb").read(), items[7][0].image.open("rb").read()]
    assert learner.predict(featurizer_for("image").transform(data)) == ["blue", "red"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_trainers_racing_on_one_project_produce_exactly_one_version(project, user):
    for item, name in zip(items_of(project), ["positive", "negative", "neutral"], strict=False):
        label(item, user, [name])
    ProjectTraining.objects.create(project=project)
    barrier = threading.Barrier(2)
    results: list = []
    errors: list[BaseException] = []

    def train() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(train_project_once(Project.objects.get(pk=project.pk)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=train) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert not errors, errors
    assert sorted(r is None for r in results) == [False, True]
    assert ModelVersion.objects.filter(project=project).count() == 1


def test_follow_up_work_waits_while_a_training_run_is_in_progress():
    from curation import trainer

    released = threading.Event()

    def estimate_step() -> None:
        trainer.wait_while_training(timeout=30)
        released.set()

    with trainer._run_in_progress():
        waiter = threading.Thread(target=estimate_step)
        waiter.start()
        assert not released.wait(0.2)  # still held while the run goes on
    waiter.join(30)
    assert released.is_set()


def test_after_a_run_a_newer_label_counts_as_waiting_and_the_sample_rotation_waits_for_it(
    separable, user
):
    from curation import trainer

    project, by_class = separable
    for name, items in by_class.items():
        for item in items[:4]:
            label(item, user, [name])
    result = trainer.train(project.pk, announce=False)
    until = result.version.metrics["last_label_at"]
    assert trainer._labels_waiting(project, until) is False
    state = trainer._states[project.pk]
    assert state.deferred == 0

    label(by_class["positive"][5], user, ["positive"])
    assert trainer._labels_waiting(project, until) is True
    trainer._after_announcement(project, state, result)  # as if that label came during the run
    assert state.deferred == 1
