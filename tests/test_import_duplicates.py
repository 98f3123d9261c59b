"""Exact duplicates at import: a text equal to an earlier line's once normalised (case,
Unicode forms, spacing) or to an item already in the project, and an image whose bytes equal
another's, are reported with both places, and left out on request; a bad line still rolls
back everything."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotations.content_hash import text_hash
from annotations.imports import ImportFailed, import_file, import_image_folder
from annotations.models import Item, Membership
from tests.conftest import PASSWORD, make_user
from tests.test_imports import image_bytes, zip_bytes

pytestmark = pytest.mark.django_db

CSV = (
    "id,text\n"
    "a,Delayed again\n"  # line 2
    "b,The crew was great\n"  # line 3
    "c,  DELAYED   again \n"  # line 4: line 2 in other case and spacing
    "d,ＴＨＥ crew was great\n"  # line 5: full-width letters (NFKC) of line 3
    "e,Something else\n"
)


def run(project, data: str, filename: str = "dups.csv", **options):
    return import_file(
        project=project, fileobj=io.BytesIO(data.encode()), filename=filename, **options
    )


def test_duplicates_within_the_file_are_reported_with_their_lines_and_imported(project):
    result = run(project, CSV)
    assert result.created == 5 and result.duplicate_count == 2 and result.skipped == 0
    assert result.duplicates == ("line 4 duplicates line 2", "line 5 duplicates line 3")
    assert result.summary() == "Imported 5 items from dups.csv. 2 exact duplicates imported anyway."
    stored = dict(Item.objects.filter(project=project).values_list("external_id", "content_hash"))
    assert stored["a"] == stored["c"] == text_hash("delayed again")
    assert stored["e"] != stored["a"]


def test_skipping_leaves_out_duplicates_of_the_file_and_of_the_project(project):
    # The project fixture holds "review number 0" … as t0 ….
    data = "id,text\nx,Review  number 3\ny,new text\nz,new TEXT\n"
    result = run(project, data, skip_duplicates=True)
    assert result.duplicates == (
        "line 2 duplicates existing item 't3'",
        "line 4 duplicates line 3",
    )
    assert result.created == 1 and result.skipped == 2
    assert list(
        Item.objects.filter(project=project, external_id__in=["x", "y", "z"]).values_list(
            "external_id", flat=True
        )
    ) == ["y"]


def test_a_duplicate_of_an_earlier_line_is_not_also_reported_against_the_project(project):
    rows = "".join(f"n{i},unique text {i}\n" for i in range(2500))  # past one insert batch
    result = run(project, "id,text\n" + rows + "late,Unique   text 7\n")
    assert result.duplicates == ("line 2502 duplicates line 9",)


def test_a_bad_line_rolls_back_the_whole_import_duplicates_and_all(project):
    before = Item.objects.filter(project=project).count()
    with pytest.raises(ImportFailed) as failed:
        run(project, CSV + "f,\n", skip_duplicates=True)
    assert failed.value.errors == ["dups.csv line 7: column 'text' is empty"]
    assert Item.objects.filter(project=project).count() == before


def test_identical_images_are_reported_by_entry_and_can_be_skipped(image_project, media_root):
    red, blue = image_bytes(color=(200, 0, 0)), image_bytes(color=(0, 0, 200))
    archive = zip_bytes({"a/red.png": red, "a/blue.png": blue, "b/red-copy.png": red})
    result = import_file(project=image_project, fileobj=io.BytesIO(archive), filename="imgs.zip")
    assert result.created == 3
    assert result.duplicates == ("b/red-copy.png duplicates a/red.png",)
    again = zip_bytes({"c/red.png": red, "c/green.png": image_bytes(color=(0, 200, 0))})
    result = import_file(
        project=image_project,
        fileobj=io.BytesIO(again),
        filename="more.zip",
        skip_duplicates=True,
    )
    assert result.duplicates == ("c/red.png duplicates existing item 'a/red.png'",)
    assert result.created == 1 and not Item.objects.filter(external_id="c/red.png").exists()


def test_a_folder_import_skips_duplicate_images_too(image_project, media_root, tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "one.png").write_bytes(image_bytes())
    (folder / "two.png").write_bytes(image_bytes())
    result = import_image_folder(project=image_project, path=folder, skip_duplicates=True)
    assert result.created == 1 and result.duplicates == ("two.png duplicates one.png",)


def test_the_command_lists_duplicates_and_skips_them_when_asked(project, tmp_path):
    path = tmp_path / "cmd.csv"
    path.write_text(CSV, encoding="utf-8")
    out = io.StringIO()
    call_command(
        "import_items", "Sentiment", str(path), "--skip-duplicates", "--no-progress", stdout=out
    )
    text = out.getvalue()
    assert "line 4 duplicates line 2\nline 5 duplicates line 3\n" in text
    assert "Imported 3 items into 'Sentiment'. 2 exact duplicates skipped." in text


def test_the_import_page_lists_the_duplicates_and_offers_to_skip_them(project, client):
    admin = make_user("imp-admin")
    Membership.objects.create(project=project, user=admin, role=Membership.Role.ADMIN)
    client.login(username="imp-admin", password=PASSWORD)
    url = reverse("project_import", args=[project.pk])
    assert 'name="skip_duplicates"' in client.get(url).content.decode()
    upload = io.BytesIO(CSV.encode())
    upload.name = "dups.csv"
    page = client.post(url, {"file": upload, "text_field": "text", "skip_duplicates": "on"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "Imported 3 items from dups.csv. 2 exact duplicates skipped." in html
    assert "<li>line 4 duplicates line 2</li>" in html
