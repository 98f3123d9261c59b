"""Imports over the API and the import page, in the new formats: a Label Studio export posted
as a multipart file or as the request body, located errors as 422, roles and outsiders."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations import exports, imports
from annotations.models import Annotation, Item, Membership, PreAnnotation, Project
from annotations.services import project_create
from tests.conftest import make_user
from tests.test_formats_images import LS_IMAGES, zipped

pytestmark = pytest.mark.django_db
LS_EXPORT = Path(__file__).parent / "fixtures" / "formats" / "labelstudio_export.json"


@pytest.fixture
def ls_project(db) -> Project:
    return project_create(name="LS", classes=["Positive", "Negative", "Neutral"], overlap=2)


@pytest.fixture
def admin_client(client, ls_project):
    user = make_user("boss")
    Membership.objects.create(project=ls_project, user=user, role=Membership.Role.ADMIN)
    client.force_login(user)
    return client


def url(project: Project) -> str:
    return f"/api/projects/{project.pk}/items/import/"


def test_a_label_studio_export_posted_as_a_file_imports_with_its_answers(admin_client, ls_project):
    upload = SimpleUploadedFile("tasks.json", LS_EXPORT.read_bytes())
    response = admin_client.post(url(ls_project), {"file": upload})
    assert response.status_code == 201, response.content
    assert response.json()["created"] == 3
    assert Annotation.objects.filter(project=ls_project).count() == 6
    assert PreAnnotation.objects.filter(project=ls_project).count() == 1


def test_a_file_sent_as_the_request_body_imports_too(admin_client, ls_project):
    response = admin_client.post(
        url(ls_project) + "?filename=tasks.json&fmt=labelstudio",
        data=LS_EXPORT.read_bytes(),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    assert Item.objects.filter(project=ls_project).count() == 3


def test_a_body_sent_as_curl_data_binary_sends_it_imports(admin_client, ls_project):
    """`curl --data-binary @tasks.json` labels the body application/x-www-form-urlencoded: it is
    still the file (a form field cannot carry one), as the README's example sends it."""
    response = admin_client.post(
        url(ls_project) + "?filename=tasks.json",
        data=LS_EXPORT.read_bytes(),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 201, response.content
    assert Item.objects.filter(project=ls_project).count() == 3


def test_a_bad_file_is_a_422_with_located_errors_and_imports_nothing(admin_client, ls_project):
    tasks = json.loads(LS_EXPORT.read_text())
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["Happy"]
    response = admin_client.post(
        url(ls_project) + "?filename=tasks.json",
        data=json.dumps(tasks).encode(),
        content_type="application/json",
    )
    assert response.status_code == 422
    assert response.json()["errors"][0].startswith(
        "tasks.json task 2 (id 102), annotation 1: Unknown label(s) 'Happy'"
    )
    assert not Item.objects.filter(project=ls_project).exists()


def test_an_upload_over_the_limit_is_refused_before_it_is_read(admin_client, ls_project, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 1000
    response = admin_client.post(
        url(ls_project), data=LS_EXPORT.read_bytes(), content_type="application/json"
    )
    assert response.status_code == 413
    assert not Item.objects.filter(project=ls_project).exists()


def test_annotators_and_outsiders_cannot_import(client, ls_project):
    annotator = make_user("ann")
    Membership.objects.create(project=ls_project, user=annotator, role=Membership.Role.ANNOTATOR)
    client.force_login(annotator)
    body = {"file": SimpleUploadedFile("tasks.json", LS_EXPORT.read_bytes())}
    assert client.post(url(ls_project), body).status_code == 403
    client.force_login(make_user("stranger"))
    body = {"file": SimpleUploadedFile("tasks.json", LS_EXPORT.read_bytes())}
    assert client.post(url(ls_project), body).status_code == 404
    assert not Item.objects.filter(project=ls_project).exists()


def test_a_large_body_streams_through_in_bounded_memory(admin_client, ls_project, settings):
    """20,000 tasks (about 4 MB) posted in one request: the body is spooled to a file and the
    tasks read a chunk at a time, so the import never holds the file's parsed tasks at once."""
    settings.IMPORT_MAX_UPLOAD_BYTES = 100 * 1024 * 1024
    task = {
        "data": {"text": "", "source": "bulk"},
        "annotations": [
            {
                "completed_by": 1,
                "result": [{"type": "choices", "value": {"choices": ["Positive"]}}],
                "lead_time": 1.5,
            }
        ],
    }
    tasks = []
    for i in range(20_000):
        task["id"] = i + 1
        task["data"]["text"] = f"review number {i} " + "x" * 100
        tasks.append(json.dumps(task))
    body = ("[" + ",\n".join(tasks) + "]").encode()
    tracemalloc.start()
    try:
        response = admin_client.post(
            url(ls_project) + "?filename=bulk.json", data=body, content_type="application/json"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 201, response.content[:500]
    assert Item.objects.filter(project=ls_project).count() == 20_000
    # The test client holds the body itself; the import adds far less than its parsed tasks.
    assert peak < len(body) * 6


def test_the_import_page_offers_the_new_formats_and_imports_label_studio(admin_client, ls_project):
    page = admin_client.get(f"/projects/{ls_project.pk}/import/")
    assert b"Label Studio tasks" in page.content and b"doccano" in page.content
    upload = SimpleUploadedFile("tasks.json", LS_EXPORT.read_bytes())
    response = admin_client.post(f"/projects/{ls_project.pk}/import/", {"file": upload})
    assert response.status_code == 302
    assert Annotation.objects.filter(project=ls_project).count() == 6


def test_the_project_page_links_the_label_studio_and_doccano_exports(admin_client, ls_project):
    response = admin_client.get(f"/projects/{ls_project.pk}/export.doccano")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")


def test_the_hf_download_is_a_zip_of_a_datasets_folder(admin_client, ls_project):
    admin_client.post(
        url(ls_project) + "?filename=tasks.json",
        data=LS_EXPORT.read_bytes(),
        content_type="application/json",
    )
    response = admin_client.get(f"/projects/{ls_project.pk}/export.hf")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        names = archive.namelist()
    assert any(n.endswith(".parquet") for n in names) and any(
        n.endswith("README.md") for n in names
    )
    # Text projects have no folders export.
    assert admin_client.get(f"/projects/{ls_project.pk}/export.folders").status_code == 404


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "labelstudio", "doccano", "hf"])
def test_the_api_exports_the_whole_project_in_every_format_the_page_offers(
    admin_client, ls_project, fmt
):
    admin_client.post(
        url(ls_project) + "?filename=tasks.json",
        data=LS_EXPORT.read_bytes(),
        content_type="application/json",
    )
    api = admin_client.get(f"/api/projects/{ls_project.pk}/export.{fmt}")
    page = admin_client.get(f"/projects/{ls_project.pk}/export.{fmt}")
    assert api.status_code == 200 and page.status_code == 200
    assert api["Content-Type"] == page["Content-Type"]
    body = b"".join(api.streaming_content)
    if fmt == "hf":  # a zip made anew each time: compare what is in it
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert any(n.endswith(".parquet") for n in archive.namelist())
    else:
        assert body == b"".join(page.streaming_content)
        assert b"Positive" in body or b"Negative" in body


def test_the_api_export_refuses_unknown_and_unfitting_formats_as_json(admin_client, ls_project):
    for fmt in ("xml", "folders"):  # no such format; folders are for image projects
        response = admin_client.get(f"/api/projects/{ls_project.pk}/export.{fmt}")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"


def test_label_studio_export_of_an_image_project_points_at_the_image_urls(client, media_root):

    pets = project_create(name="Pets", item_kind=Project.ItemKind.IMAGE, classes=["cat", "dog"])
    imports.import_file(project=pets, fileobj=zipped(LS_IMAGES), filename="ls.zip")
    tasks = json.loads("".join(exports.export_chunks(pets, "labelstudio")))
    first = next(t for t in tasks if t["id"] == 7)
    item = Item.objects.get(project=pets, external_id="7")
    assert first["data"] == {
        "image": f"/projects/{pets.pk}/items/{item.pk}/image/",
        "camera": "front door",
    }
    assert first["annotations"][0]["completed_by"]["id"] == 4
    assert first["annotations"][0]["result"][0]["to_name"] == "image"
    assert first["predictions"][0]["model_version"] == "resnet18-pets"


PROBE = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dataprep_site.settings")
import dataprep_site.asgi
from django.urls import get_resolver
get_resolver().url_patterns
import annotations.api.imports, annotations.exporters.hf, annotations.imports.hf
import annotations.imports.coco, annotations.imports.labelstudio, annotations.imports.doccano
print(" ".join(m for m in ("pyarrow", "datasets", "numpy") if m in sys.modules))
"""


def test_a_web_process_with_every_format_module_loads_no_pyarrow(tmp_path):
    """pyarrow is imported inside the Hugging Face functions, when an export or import runs."""
    import os
    import subprocess
    import sys

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
    assert done.stdout.strip() == ""
