"""Labelled images in and out: a COCO file with its images (tests/fixtures/formats/coco, in the
COCO format: info, licenses, images, annotations with category_id, categories), and a folder per
class, in a folder or a zip, imported with their labels; the folders export imports back as the
same items and labels."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotations import imports
from annotations.models import Annotation, Item, Project
from annotations.services import project_create

pytestmark = pytest.mark.django_db
COCO = Path(__file__).parent / "fixtures" / "formats" / "coco"
User = get_user_model()


@pytest.fixture
def pets(db, media_root) -> Project:
    return project_create(name="Pets", item_kind=Project.ItemKind.IMAGE, classes=["cat", "dog"])


def zipped(folder: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    buffer.seek(0)
    return buffer


def labels_of(project: Project) -> dict[str, list[str] | None]:
    return {
        item.external_id: (item.gold.labels if hasattr(item, "gold") else None)
        for item in Item.objects.filter(project=project).select_related("gold")
    }


def test_a_coco_archive_is_recognised_and_imports_images_with_their_categories(pets):
    upload = zipped(COCO)
    assert imports.sniff_format(upload, "pets.zip") == "coco"
    result = imports.import_file(project=pets, fileobj=upload, filename="pets.zip")
    assert result.created == 3
    assert labels_of(pets) == {"0001.png": ["cat"], "0002.png": ["dog"], "0003.png": None}
    first = Item.objects.get(project=pets, external_id="0001.png")
    assert first.metadata == {"coco_id": 1, "license": 1, "date_captured": "2024-05-01 10:00:00"}
    assert (first.image_width, first.image_height) == (8, 8)
    assert Annotation.objects.get(item=first).annotator.username == "coco-import"


def test_a_coco_folder_imports_from_the_command_line(pets):
    call_command("import_items", pets.name, str(COCO), "--no-progress")
    assert labels_of(pets)["0002.png"] == ["dog"]


def test_coco_labels_match_the_jsonl_export(pets, tmp_path):
    call_command("import_items", pets.name, str(COCO), "--format", "coco", "--no-progress")
    out = tmp_path / "pets.jsonl"
    call_command("export_labels", pets.name, str(out))
    exported = {
        row["external_id"]: (row["gold"] or {}).get("labels")
        for row in map(json.loads, out.read_text().splitlines())
    }
    coco = json.loads((COCO / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    expected = dict.fromkeys(files.values())
    for a in coco["annotations"]:
        expected[files[a["image_id"]]] = [names[a["category_id"]]]
    assert exported == expected


def test_a_folder_per_class_round_trips_through_the_folders_export(pets, tmp_path):
    tree = tmp_path / "tree"
    for name, label in [("0001.png", "cat"), ("0002.png", "dog"), ("0003.png", "dog")]:
        (tree / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(COCO / "images" / name, tree / label / name)
    result = imports.import_file(
        project=pets, fileobj=zipped(tree), filename="tree.zip", fmt="folders"
    )
    assert result.created == 3
    assert labels_of(pets) == {
        "cat/0001.png": ["cat"],
        "dog/0002.png": ["dog"],
        "dog/0003.png": ["dog"],
    }
    out = tmp_path / "export"
    call_command("export_labels", pets.name, "--format", "folders", "--output", str(out))
    assert (out / "labels.csv").is_file()
    again = project_create(name="Again", item_kind=Project.ItemKind.IMAGE, classes=["cat", "dog"])
    call_command("import_items", again.name, str(out), "--format", "folders", "--no-progress")
    assert labels_of(again) == labels_of(pets)


def test_a_folder_that_is_not_a_class_imports_nothing_and_says_which(pets, tmp_path):
    tree = tmp_path / "tree"
    (tree / "cat").mkdir(parents=True)
    (tree / "dgo").mkdir()
    shutil.copy(COCO / "images" / "0001.png", tree / "cat" / "a.png")
    shutil.copy(COCO / "images" / "0002.png", tree / "dgo" / "b.png")
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(project=pets, fileobj=zipped(tree), filename="t.zip", fmt="folders")
    [message] = caught.value.messages
    assert message.startswith("t.zip dgo/b.png: Unknown label(s) 'dgo'")
    assert not Item.objects.filter(project=pets).exists()


def test_a_coco_annotation_of_an_unknown_image_is_located(pets, tmp_path):
    folder = tmp_path / "coco"
    shutil.copytree(COCO, folder)
    data = json.loads((folder / "annotations.json").read_text())
    data["annotations"].append({"id": 99, "image_id": 42, "category_id": 1})
    (folder / "annotations.json").write_text(json.dumps(data))
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(project=pets, fileobj=zipped(folder), filename="c.zip")
    assert caught.value.messages == [
        "c.zip annotations.json: annotations[3]: image_id 42 is not in images"
    ]
    assert not Item.objects.filter(project=pets).exists()
    assert not User.objects.filter(username="coco-import").exists()


LS_IMAGES = Path(__file__).parent / "fixtures" / "formats" / "labelstudio_images"


def test_label_studio_image_tasks_import_with_their_files(pets):
    upload = zipped(LS_IMAGES)
    assert imports.sniff_format(upload, "ls.zip") == "labelstudio"
    result = imports.import_file(project=pets, fileobj=upload, filename="ls.zip")
    assert result.created == 2
    assert labels_of(pets) == {"7": ["cat"], "8": None}
    item = Item.objects.get(project=pets, external_id="7")
    assert item.metadata == {"camera": "front door"}
    answer = Annotation.objects.get(item=item)
    assert answer.annotator.username == "labelstudio-4"
    assert answer.annotator.email == "ana@example.org" and answer.time_spent_ms == 2500
    assert item.preannotations.get().labels == ["dog"]
    assert not item.annotations.filter(annotator__username="resnet18-pets").exists()


def test_a_label_studio_image_task_without_its_file_is_located(pets, tmp_path):
    folder = tmp_path / "ls"
    shutil.copytree(LS_IMAGES, folder)
    (folder / "0002.png").unlink()
    with pytest.raises(CommandError, match="Nothing was imported: 1 problem"):
        call_command("import_items", pets.name, str(folder), "--no-progress")
    assert not Item.objects.filter(project=pets).exists()
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(project=pets, fileobj=zipped(folder), filename="ls.zip")
    assert caught.value.messages == [
        "ls.zip tasks.json task 2 (id 8): no file for image '/data/upload/5/0a1b2c3d-0002.png' "
        "in the upload"
    ]
