"""Hugging Face datasets in and out: a folder written by `datasets` itself
(tests/fixtures/formats/hf_reviews: Parquet per split, the label a ClassLabel in the schema
metadata, a dataset card) imports with its labels, and the live export loads back with
`datasets.load_dataset` holding the same texts, ids, labels and metadata."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotations import imports
from annotations.models import Annotation, GoldLabel, Item, ItemVector, PreAnnotation, Project
from annotations.services import project_create

pytestmark = pytest.mark.django_db
HF_FOLDER = Path(__file__).parent / "fixtures" / "formats" / "hf_reviews"
User = get_user_model()


@pytest.fixture(scope="module")
def hf_datasets(tmp_path_factory):
    """The `datasets` package, offline, its caches in a temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf-home")))
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_DATASETS_OFFLINE", "1")
        patch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield pytest.importorskip("datasets")


@pytest.fixture
def hf_project(db) -> Project:
    # The project's classes in another order than the file's ClassLabel: names decide.
    return project_create(name="Reviews", classes=["positive", "negative"])


def _rows(loaded) -> set:
    out = set()
    for split in loaded.values():
        names = split.features["label"].names
        for row in split:
            meta = row.get("metadata")
            meta = json.loads(meta) if isinstance(meta, str) else {"lang": row.get("lang")}
            key = row.get("external_id", row.get("id"))
            out.add((key, row["text"], names[row["label"]], meta["lang"]))
    return out


def test_a_datasets_folder_is_recognised_and_imports_with_its_labels(hf_project):
    assert imports.sniff_folder(HF_FOLDER) == "hf"
    call_command("import_items", hf_project.name, str(HF_FOLDER), "--no-progress")
    items = {i.external_id: i for i in Item.objects.filter(project=hf_project)}
    assert set(items) == {"r1", "r2", "r3", "r4"}
    assert items["r2"].metadata == {"lang": "en"}
    assert Annotation.objects.get(item=items["r2"]).labels == ["negative"]
    assert Annotation.objects.get(item=items["r2"]).annotator.username == "hf-import"
    assert GoldLabel.objects.get(item=items["r1"]).labels == ["positive"]


def test_hf_round_trip_loads_with_datasets_holding_the_same_data(
    hf_project, hf_datasets, tmp_path, settings
):
    call_command("import_items", hf_project.name, str(HF_FOLDER), "--no-progress")
    out = tmp_path / "export"
    call_command("export_labels", hf_project.name, "--format", "hf", "--output", str(out))
    cache = str(tmp_path / "cache")
    original = hf_datasets.load_dataset(str(HF_FOLDER), cache_dir=cache)
    exported = hf_datasets.load_dataset(str(out), cache_dir=cache)
    assert _rows(exported) == _rows(original)
    # …and the export imports into a fresh project as the same items and labels.
    again = project_create(name="Again", classes=["positive", "negative"])
    call_command("import_items", again.name, str(out), "--no-progress")
    assert sorted(
        (i.external_id, i.text, tuple(i.gold.labels), json.dumps(i.metadata))
        for i in Item.objects.filter(project=again).select_related("gold")
    ) == sorted(
        (i.external_id, i.text, tuple(i.gold.labels), json.dumps(i.metadata))
        for i in Item.objects.filter(project=hf_project).select_related("gold")
    )


def test_a_single_parquet_file_uploads_as_hf(hf_project):
    path = HF_FOLDER / "data" / "test-00000-of-00001.parquet"
    with path.open("rb") as handle:
        result = imports.import_file(project=hf_project, fileobj=handle, filename=path.name)
    assert result.created == 1
    assert Item.objects.get(project=hf_project).external_id == "r4"


def test_jsonl_rows_with_class_ids_vectors_and_predictions(hf_project):
    lines = [
        {"text": "good", "label": 0, "embedding": [0.1, 0.2, 0.3]},
        {"text": "bad", "label": 1, "prediction": {"model": "m", "label": "negative"}},
        {"text": "unknown", "label": -1},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    imports.import_file(project=hf_project, fileobj=io.BytesIO(data), filename="r.jsonl", fmt="hf")
    items = {i.text: i for i in Item.objects.filter(project=hf_project)}
    # Without a ClassLabel, an id is a position in the project's classes.
    assert Annotation.objects.get(item=items["good"]).labels == ["positive"]
    assert ItemVector.objects.filter(item=items["good"]).exists()
    assert PreAnnotation.objects.get(item=items["bad"]).labels == ["negative"]
    assert not Annotation.objects.filter(item=items["unknown"]).exists()


def test_a_bad_hf_row_imports_nothing_and_says_where(hf_project):
    data = b'{"text": "a", "label": 0}\n{"text": "b", "label": 7}\n'
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(
            project=hf_project, fileobj=io.BytesIO(data), filename="r.jsonl", fmt="hf"
        )
    assert caught.value.messages == [
        "r.jsonl line 2: column 'label': class id 7 is not in the project's classes (0–1)"
    ]
    assert not Item.objects.filter(project=hf_project).exists()


def test_a_damaged_parquet_file_is_refused_with_its_name(hf_project):
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(
            project=hf_project, fileobj=io.BytesIO(b"PAR1garbage"), filename="x.parquet"
        )
    [message] = caught.value.messages
    assert message.startswith("x.parquet: not a readable Parquet file")


def test_a_zipped_datasets_folder_is_recognised_and_imports(hf_project):
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(HF_FOLDER.rglob("*")):
            if path.is_file():
                archive.write(path, "hf_reviews/" + path.relative_to(HF_FOLDER).as_posix())
    buffer.seek(0)
    assert imports.sniff_format(buffer, "reviews.zip") == "hf"
    result = imports.import_file(project=hf_project, fileobj=buffer, filename="reviews.zip")
    assert result.created == 4
    assert GoldLabel.objects.get(item__external_id="r4").labels == ["negative"]


def test_parquet_columns_of_any_type_become_json_metadata_or_a_located_error(hf_project, tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "text": ["a", "b"],
            "label": [0, 1],
            "when": [dt.datetime(2024, 5, 1, 12, 0), dt.datetime(2024, 5, 2, 8, 30)],
            "score": [float("nan"), 0.5],
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    with path.open("rb") as handle:
        imports.import_file(project=hf_project, fileobj=handle, filename="t.parquet")
    first = Item.objects.get(project=hf_project, text="a")
    assert first.metadata == {"when": "2024-05-01T12:00:00", "score": None}
    binary = pa.table({"text": ["c"], "label": [0], "blob": [b"\x00\x01"]})
    pq.write_table(binary, tmp_path / "b.parquet")
    with (
        (tmp_path / "b.parquet").open("rb") as handle,
        pytest.raises(imports.ImportFailed) as caught,
    ):
        imports.import_file(project=hf_project, fileobj=handle, filename="b.parquet")
    assert caught.value.messages == [
        "b.parquet row 1: column 'blob' holds binary data, which cannot be metadata"
    ]
