"""Predictions and vectors from a team's own models: the rules every way in shares."""

from __future__ import annotations

import math

import pytest

from annotations.models import ItemVector, PreAnnotation, Project
from annotations.preannotations import (
    PreAnnotationError,
    parse_prediction,
    parse_vector,
    predictions_save,
    vector_values,
    vectors_save,
)
from tests.conftest import add_text_items

pytestmark = pytest.mark.django_db


def test_a_prediction_takes_a_label_labels_or_scores(project):
    classes = project.class_names()
    first, second = classes[0], classes[1]
    p = parse_prediction(
        {"model": "m1", "label": first, "score": 0.8}, classes=classes, multi_label=False
    )
    assert (p.model_name, p.labels, p.score, p.scores) == ("m1", (first,), 0.8, None)
    p = parse_prediction(
        {"model": "m1", "scores": {first: 0.3, second: 0.7}}, classes=classes, multi_label=False
    )
    assert p.labels == (second,)
    p = parse_prediction(
        {"model": "m1", "scores": {first: 0.6, second: 0.7}}, classes=classes, multi_label=True
    )
    assert p.labels == (first, second)
    p = parse_prediction(
        {"label": first}, classes=classes, multi_label=False, default_model="imported"
    )
    assert p.model_name == "imported"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"label": "x"}, '"model"'),
        ({"model": "m", "label": "nope"}, "'nope' is not a label class"),
        ({"model": "m", "scores": {"CLASS0": 1.5}}, "between 0 and 1"),
        ({"model": "m", "labels": ["CLASS0", "CLASS1"]}, "one predicted label"),
        ({"model": "m"}, '"label", "labels" or "scores"'),
        ({"model": "m", "label": "CLASS0", "colour": 1}, "unknown prediction field"),
        ({"model": "m", "label": "CLASS0", "score": float("nan")}, "between 0 and 1"),
        ("pos", "must be an object"),
    ],
)
def test_a_bad_prediction_says_what_is_wrong(project, raw, message):
    classes = project.class_names()
    if isinstance(raw, dict):
        raw = {
            k: (
                {classes[0] if n == "CLASS0" else n: p for n, p in v.items()}
                if k == "scores"
                else v
            )
            for k, v in raw.items()
        }
        if raw.get("label") == "CLASS0":
            raw["label"] = classes[0]
        if raw.get("labels") == ["CLASS0", "CLASS1"]:
            raw["labels"] = [classes[0], classes[1]]
    with pytest.raises(PreAnnotationError, match=message.replace("(", r"\(")):
        parse_prediction(raw, classes=classes, multi_label=False)


def test_a_retired_class_cannot_be_predicted(project):
    retired = project.label_classes.order_by("order").first()
    retired.retired = True
    retired.save()
    with pytest.raises(PreAnnotationError, match="is not a label class"):
        parse_prediction(
            {"model": "m", "label": retired.name}, classes=project.class_names(), multi_label=False
        )


def test_posting_again_under_the_same_model_replaces_the_prediction(project):
    (item,) = add_text_items(project, ["hello"], prefix="p")
    classes = project.class_names()
    predictions_save(
        project,
        [
            (
                item.pk,
                parse_prediction(
                    {"model": "m", "label": classes[0]}, classes=classes, multi_label=False
                ),
            )
        ],
    )
    predictions_save(
        project,
        [
            (
                item.pk,
                parse_prediction(
                    {"model": "m", "label": classes[1], "score": 0.9},
                    classes=classes,
                    multi_label=False,
                ),
            )
        ],
    )
    predictions_save(
        project,
        [
            (
                item.pk,
                parse_prediction(
                    {"model": "other", "label": classes[0]}, classes=classes, multi_label=False
                ),
            )
        ],
    )
    rows = dict(PreAnnotation.objects.filter(item=item).values_list("model_name", "labels"))
    assert rows == {"m": [classes[1]], "other": [classes[0]]}
    assert item.annotations.count() == 0  # never a human answer


def test_vectors_fix_their_length_on_the_first_store(project):
    a, b = add_text_items(project, ["a", "b"], prefix="v")
    vectors_save(project, [(a.pk, parse_vector([0.5, -1.25, 3]))])
    project.refresh_from_db()
    assert project.vector_dim == 3
    assert vector_values(ItemVector.objects.get(item=a).values) == [0.5, -1.25, 3.0]
    with pytest.raises(PreAnnotationError, match="have 3 values; these have 2"):
        vectors_save(project, [(b.pk, parse_vector([1.0, 2.0]))])
    assert not ItemVector.objects.filter(item=b).exists()
    with pytest.raises(PreAnnotationError, match="have 3 values; this one has 2"):
        parse_vector([1.0, 2.0], dim=project.vector_dim)
    vectors_save(project, [(a.pk, parse_vector([1, 2, 3]))])
    assert vector_values(ItemVector.objects.get(item=a).values) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "non-empty list"),
        ([1, "2"], "value 1 is not a number"),
        ([1, math.inf], "not a finite float32"),
        ([True], "not a number"),
        ("1,2", "list"),
    ],
)
def test_a_bad_vector_says_what_is_wrong(raw, message):
    with pytest.raises(PreAnnotationError, match=message):
        parse_vector(raw)


def test_vectors_of_mixed_lengths_in_one_batch_store_nothing(project):
    a, b = add_text_items(project, ["a", "b"], prefix="v")
    with pytest.raises(PreAnnotationError, match="share one length"):
        vectors_save(project, [(a.pk, parse_vector([1.0])), (b.pk, parse_vector([1.0, 2.0]))])
    assert Project.objects.get(pk=project.pk).vector_dim is None
    assert not ItemVector.objects.exists()
