"""doccano text classification JSONL in and out (tests/fixtures/formats/doccano_export.jsonl is
in doccano's export format: id, text, the example's meta fields, label, Comments)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotations import imports
from annotations.models import Annotation, GoldLabel, Item, Membership, PreAnnotation, Project
from annotations.services import project_create

pytestmark = pytest.mark.django_db
DOCCANO = Path(__file__).parent / "fixtures" / "formats" / "doccano_export.jsonl"
User = get_user_model()


@pytest.fixture
def doc_project(db) -> Project:
    return project_create(name="Shop reviews", classes=["positive", "negative"])


def import_doccano(project: Project, path: Path = DOCCANO, fmt: str | None = None):
    with path.open("rb") as handle:
        return imports.import_file(project=project, fileobj=handle, filename=path.name, fmt=fmt)


def test_a_doccano_export_is_recognised_from_its_content():
    with DOCCANO.open("rb") as handle:
        assert imports.sniff_format(handle, "data.jsonl") == "doccano"


def test_doccano_labels_are_answers_of_one_doccano_source(doc_project):
    assert import_doccano(doc_project).created == 4
    source = User.objects.get(username="doccano-import")
    assert not source.is_active and not source.has_usable_password()
    assert Membership.objects.get(project=doc_project, user=source).role == "annotator"
    item = Item.objects.get(project=doc_project, external_id="11")
    assert item.text == "Terrible customer service."
    assert item.metadata == {"channel": "phone", "Comments": []}
    assert Annotation.objects.get(item=item).labels == ["negative"]
    assert GoldLabel.objects.get(item=item).labels == ["negative"]
    # An empty label list leaves the item unlabelled and in the queue.
    unlabelled = Item.objects.get(project=doc_project, external_id="14")
    assert (unlabelled.annotation_count, unlabelled.needs_annotation) == (0, True)
    doc_project.refresh_from_db()
    assert (doc_project.item_count, doc_project.complete_count) == (4, 3)


def test_doccano_round_trip_gives_the_same_lines(doc_project, tmp_path):
    import_doccano(doc_project)
    out = tmp_path / "out.jsonl"
    call_command("export_labels", str(doc_project.pk), str(out), "--format", "doccano")
    original = [json.loads(line) for line in DOCCANO.read_text().splitlines()]
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported == original


def test_predictions_and_vectors_in_doccano_lines_are_kept_apart_from_answers(
    doc_project, tmp_path
):
    line = {
        "text": "Fine.",
        "label": [],
        "prediction": {"model": "m1", "label": "positive", "score": 0.7},
        "vector": [0.5, 0.25],
    }
    imports.import_file(
        project=doc_project,
        fileobj=io.BytesIO(json.dumps(line).encode()),
        filename="p.jsonl",
        fmt="doccano",
    )
    item = Item.objects.get(project=doc_project)
    assert not Annotation.objects.filter(item=item).exists()
    assert PreAnnotation.objects.get(item=item).labels == ["positive"]
    assert item.vector.values is not None
    out = tmp_path / "out.jsonl"
    call_command("export_labels", str(doc_project.pk), str(out), "--format", "doccano")
    [back] = [json.loads(x) for x in out.read_text().splitlines()]
    assert back["predictions"] == [{"model": "m1", "labels": ["positive"], "score": 0.7}]
    assert back["vector"] == [0.5, 0.25] and back["label"] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"text": "a", "label": ["positive"]}\n{"text": "b", "label": ["happy"]}\n',
            "d.jsonl line 2, label: Unknown label(s) 'happy'",
        ),
        (
            '{"text": "a", "label": ["positive", "negative"]}\n',
            "d.jsonl line 1, label: Choose exactly one label",
        ),
        (
            '{"text": "a", "label": [[0, 1, "ORG"]]}\n',
            "d.jsonl line 1: field 'label' must be a list of class names",
        ),
        (
            '{"body": "a", "label": []}\n',
            "d.jsonl line 1: no field 'text'; its fields are: 'body', 'label'",
        ),
        (
            '{"text": "a", "label": []}\n{"text": "b", "label": [}\n',
            "d.jsonl line 2, column 25: malformed JSON",
        ),
        (
            '{"text": "a", "vector": [1, "x"]}\n',
            "d.jsonl line 1: field 'vector': vector value 1 is not a number",
        ),
    ],
)
def test_a_bad_doccano_line_imports_nothing_and_says_where(doc_project, content, message):
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(
            project=doc_project,
            fileobj=io.BytesIO(content.encode()),
            filename="d.jsonl",
            fmt="doccano",
        )
    assert any(m.startswith(message) for m in caught.value.messages), caught.value.messages
    assert not Item.objects.filter(project=doc_project).exists()
    assert not User.objects.filter(username="doccano-import").exists()


def test_our_own_jsonl_takes_predictions_and_vectors_as_such_not_as_metadata(doc_project):
    lines = [
        {"id": "a", "text": "one", "prediction": {"model": "m1", "label": "positive"}},
        {"id": "b", "text": "two", "predictions": [{"label": "negative", "score": 0.6}]},
        {"id": "c", "text": "three", "vector": [1, 2], "lang": "en"},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    imports.import_file(project=doc_project, fileobj=io.BytesIO(data), filename="ours.jsonl")
    items = {i.external_id: i for i in Item.objects.filter(project=doc_project)}
    assert items["c"].metadata == {"lang": "en"} and items["a"].metadata == {}
    assert PreAnnotation.objects.get(item=items["a"]).model_name == "m1"
    assert PreAnnotation.objects.get(item=items["b"]).model_name == "imported"
    assert items["c"].vector.values is not None
    assert not Annotation.objects.filter(project=doc_project).exists()


def test_a_bad_prediction_in_our_own_json_is_located(doc_project):
    data = b'[{"text": "one"}, {"text": "two", "prediction": {"model": "m", "label": "meh"}}]'
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(project=doc_project, fileobj=io.BytesIO(data), filename="x.json")
    assert caught.value.messages == [
        "x.json record 2, field 'prediction': predicted label 'meh' is not a label class "
        "(positive, negative)"
    ]
    assert not Item.objects.filter(project=doc_project).exists()


def test_doccano_csv_takes_one_class_a_row(doc_project):
    data = b'text,label,channel\n"Terrible customer service.",negative,phone\nGreat price.,,web\n'
    imports.import_file(
        project=doc_project, fileobj=io.BytesIO(data), filename="d.csv", fmt="doccano"
    )
    items = {i.text: i for i in Item.objects.filter(project=doc_project)}
    assert Annotation.objects.get(item=items["Terrible customer service."]).labels == ["negative"]
    assert items["Great price."].metadata == {"channel": "web"}
    assert not Annotation.objects.filter(item=items["Great price."]).exists()
