"""Dataset versions on the pages, in the API and through `export_labels --version`: saving,
listing with metrics, downloads in every format (byte-identical twice), a damaged file
refused, and the diff page."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from annotations.models import Item
from curation import jobs
from curation.dataset_versions import version_create
from curation.version_models import DatasetVersion
from tests.conftest import PASSWORD, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords", "data_dir")


def label(item: Item, user, labels: list[str]) -> None:
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


@pytest.fixture
def labelled(project, annotator):
    classes = ["positive", "negative", "neutral"]
    items = list(Item.objects.filter(project=project).order_by("id"))
    for i, item in enumerate(items[:12]):
        label(item, annotator, [classes[i % 3]])
    return items


@pytest.fixture
def rev_client(client, reviewer):
    client.login(username=reviewer.username, password=PASSWORD)
    return client


@pytest.fixture
def api(reviewer):
    client = APIClient()
    client.force_authenticate(reviewer)
    return client


def body(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


# --- Pages -------------------------------------------------------------------------------------


def test_the_list_says_there_are_none_yet(rev_client, project):
    response = rev_client.get(reverse("project_versions", args=[project.pk]))
    assert response.status_code == 200
    assert "No versions yet" in response.content.decode()


def test_saving_a_version_on_the_page_queues_it_for_the_worker(rev_client, project, labelled):
    url = reverse("project_versions", args=[project.pk])
    response = rev_client.post(url, {"name": "first-try", "note": "before cleaning"})
    assert response.status_code == 302
    version = DatasetVersion.objects.get(project=project)
    assert (version.name, version.status, version.author.username) == ("first-try", "queued", "rev")
    page = rev_client.get(url).content.decode()
    assert 'hx-trigger="every 2s"' in page and "queued" in page  # the table refreshes itself
    jobs.versions_work(project.pk)
    page = rev_client.get(url).content.decode()
    assert "every 2s" not in page
    assert 'data-version="first-try"' in page and "before cleaning" in page


def test_a_bad_name_is_refused_on_the_page_and_nothing_is_saved(rev_client, project, labelled):
    url = reverse("project_versions", args=[project.pk])
    response = rev_client.post(url, {"name": "no spaces please"})
    assert response.status_code == 400
    assert "letters, digits" in response.content.decode()
    assert not DatasetVersion.objects.exists()
    response = rev_client.post(url, {"name": "diff"})
    assert response.status_code == 400 and "reserved" in response.content.decode()


def test_the_list_shows_the_metrics_and_their_change(rev_client, project, annotator):
    from curation.models import ProjectTraining
    from tests.conftest import add_text_items

    ProjectTraining.objects.update_or_create(
        project=project, defaults={"split_validation": 0.0, "split_test": 0.3}
    )
    add_text_items(
        project, [f"{'great' if i % 2 else 'awful'} text {i}" for i in range(60)], prefix="w"
    )
    words = Item.objects.filter(project=project, external_id__startswith="w").order_by("id")
    for item in words[:40]:
        label(item, annotator, ["positive" if "great" in item.text else "negative"])
    version_request_and_work(project, "small")
    for item in words[40:]:
        label(item, annotator, ["positive" if "great" in item.text else "negative"])
    version_request_and_work(project, "bigger")
    small, bigger = DatasetVersion.objects.order_by("number")
    assert small.metrics_status == bigger.metrics_status == "done"
    page = rev_client.get(reverse("project_versions", args=[project.pk])).content.decode()
    change = bigger.metrics["accuracy"] - small.metrics["accuracy"]
    assert f"{bigger.metrics['accuracy']:.3f}" in page
    assert f"{'+' if change >= 0 else ''}{change:.3f} on the previous" in page


def version_request_and_work(project, name: str) -> None:
    from curation.dataset_versions import version_request

    version_request(project, name=name)
    jobs.versions_work(project.pk)


def test_the_detail_page_shows_counts_per_class_and_split(rev_client, project, labelled):
    version = version_create(project, name="v1")
    page = rev_client.get(
        reverse("project_version_detail", args=[project.pk, "v1"])
    ).content.decode()
    assert version.content_hash in page and "positive" in page
    assert "Download hf" in page and "Download folders" not in page  # a text project
    assert (
        rev_client.get(reverse("project_version_detail", args=[project.pk, "v9"])).status_code
        == 404
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_download_streams_the_version_and_is_the_same_twice(rev_client, project, labelled, fmt):
    version_create(project, name="v1")
    url = reverse("project_version_download", args=[project.pk, "v1"]) + f"?format={fmt}"
    first, second = rev_client.get(url), rev_client.get(url)
    assert first.status_code == 200 and first["Content-Disposition"].endswith(f'-v1.{fmt}"')
    data = body(first)
    assert data == body(second)
    text = data.decode()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert len(rows) == 20 and sum(1 for r in rows if r["gold"]) == 12
    else:
        assert text.splitlines()[0].startswith("item_id,external_id,text,split")


def test_a_hugging_face_download_is_a_zip_of_the_folder_and_the_same_twice(
    rev_client, project, labelled
):
    version_create(project, name="v1")
    url = reverse("project_version_download", args=[project.pk, "v1"]) + "?format=hf"
    first, second = body(rev_client.get(url)), body(rev_client.get(url))
    assert first == second
    names = zipfile.ZipFile(io.BytesIO(first)).namelist()
    assert any(n.endswith("/README.md") for n in names)
    assert any("/data/train-00000-of-00001.parquet" in n for n in names)
    bad = rev_client.get(url.replace("format=hf", "format=folders"))
    assert bad.status_code == 400  # folders are for image projects


def test_a_damaged_version_is_refused_with_409_on_the_page_and_in_the_api(
    rev_client, api, project, labelled
):
    version = version_create(project, name="v1")
    version.path.write_bytes(version.path.read_bytes()[:-10])
    response = rev_client.get(reverse("project_version_download", args=[project.pk, "v1"]))
    assert response.status_code == 409 and "checksum" in response.content.decode()
    response = api.get(f"/api/projects/{project.pk}/versions/v1/export.csv")
    assert response.status_code == 409 and "checksum" in response.json()["detail"]


def test_the_diff_page_shows_the_summary_pairs_and_filtered_changes(
    rev_client, project, annotator, labelled
):
    version_create(project, name="a")
    items = labelled
    for item in items[12:15]:
        label(item, annotator, ["neutral"])
    version_create(project, name="b")
    url = reverse("project_versions_diff", args=[project.pk])
    page = rev_client.get(url, {"from": "a", "to": "b"}).content.decode()
    assert "(none)" in page and "neutral" in page
    assert page.count("<tr data-item=") == 3
    only = rev_client.get(url, {"from": "a", "to": "b", "change": "added"}).content.decode()
    assert "<tr data-item=" not in only and "No changes of this kind" in only
    assert rev_client.get(url, {"from": "a", "to": "zz"}).status_code == 404
    assert rev_client.get(url).status_code == 302  # nothing chosen: back to the list


# --- API ---------------------------------------------------------------------------------------


def test_the_api_saves_lists_and_describes_versions(api, project, labelled):
    response = api.post(f"/api/projects/{project.pk}/versions/", {"name": "api-1", "note": "n"})
    assert response.status_code == 202 and response.json()["status"] == "queued"
    jobs.versions_work(project.pk)
    listed = api.get(f"/api/projects/{project.pk}/versions/").json()
    assert [v["name"] for v in listed] == ["api-1"] and listed[0]["labelled"] == 12
    detail = api.get(f"/api/projects/{project.pk}/versions/api-1/").json()
    assert detail["split_rule"]["fractions"]["train"] == pytest.approx(0.8)
    again = api.post(f"/api/projects/{project.pk}/versions/", {"name": "api-1"})
    assert again.status_code == 400 and "taken" in again.json()["name"]


def test_the_api_diff_pages_the_changes(api, project, annotator, labelled):
    version_create(project, name="a")
    for item in labelled[12:16]:
        label(item, annotator, ["positive"])
    version_create(project, name="b")
    url = f"/api/projects/{project.pk}/versions/diff/"
    diff = api.get(url, {"from": "a", "to": "b"}).json()
    assert diff["summary"]["labelled"] == 4 and diff["count"] == 4
    assert diff["pairs"] == [{"from": "(none)", "to": "positive", "items": 4}]
    assert api.get(url, {"from": "a"}).status_code == 400
    assert api.get(url, {"from": "a", "to": "b", "change": "nope"}).status_code == 400
    assert api.get(url, {"from": "a", "to": "b", "offset": "-1"}).status_code == 400


# --- export_labels --version -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "hf"])
def test_export_labels_writes_a_version_the_same_way_twice(project, labelled, tmp_path, fmt):
    version_create(project, name="v1")
    outputs = []
    for n in (1, 2):
        out = tmp_path / f"out{n}" / ("data" if fmt == "hf" else f"labels.{fmt}")
        out.parent.mkdir()
        call_command(
            "export_labels",
            str(project.pk),
            "--version",
            "v1",
            "--format",
            fmt,
            "--output",
            str(out),
        )
        outputs.append(out)
    files = [
        sorted(p for p in (o.rglob("*") if o.is_dir() else [o]) if p.is_file()) for o in outputs
    ]
    assert [p.relative_to(outputs[0]) for p in files[0]] == [
        p.relative_to(outputs[1]) for p in files[1]
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*files, strict=True))


def test_export_labels_refuses_unknown_versions_and_folder_formats_without_a_folder(
    project, labelled, tmp_path
):
    with pytest.raises(CommandError, match="No version 'v7'"):
        call_command("export_labels", str(project.pk), "--version", "v7")
    # The live data exports as a datasets folder too (it needed a version before formats came).
    live = tmp_path / "live"
    call_command("export_labels", str(project.pk), "--format", "hf", "--output", str(live))
    assert (live / "README.md").is_file()
    with pytest.raises(CommandError, match="folder"):
        call_command("export_labels", str(project.pk), "--format", "hf")
    version_create(project, name="v1")
    with pytest.raises(CommandError, match="folder"):
        call_command("export_labels", str(project.pk), "--version", "v1", "--format", "hf")
