"""Exporting labels as JSONL and CSV: the content, formula-injection safety, streaming, who
may download, and the management command."""

from __future__ import annotations

import csv
import io
import json
import uuid

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import AsyncClient
from django.urls import reverse

from annotations import exports
from annotations.models import Item, LabelClass, Membership, Project
from annotations.review import review_decide, review_flag
from annotations.services import project_create, project_set_overlap
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def answer(item: Item, user, labels: list[str], *, skipped: bool = False, ms: int = 1500):
    return submit_handed_out(
        item=item,
        annotator=user,
        labels=labels,
        skipped=skipped,
        time_spent_ms=ms,
        client_uuid=uuid.uuid4(),
    ).annotation


@pytest.fixture
def labelled(project, annotator, reviewer):
    """t0 labelled by two people (overlap 2), t1 skipped by one, the rest unlabelled."""
    project_set_overlap(project, 2)
    t0, t1 = (
        Item.objects.get(project=project, external_id="t0"),
        Item.objects.get(project=project, external_id="t1"),
    )
    t0.metadata = {"source": "web", "stars": 4}
    t0.save(update_fields=["metadata"])
    first = answer(t0, annotator, ["positive"], ms=1200)
    second = answer(t0, reviewer, ["neutral"], ms=800)
    skipped = answer(t1, annotator, [], skipped=True, ms=300)
    return {"t0": t0, "t1": t1, "first": first, "second": second, "skipped": skipped}


def body(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode("utf-8")


def jsonl_of(project: Project, **kwargs) -> list[dict]:
    text = "".join(exports.jsonl_chunks(project, **kwargs))
    return [json.loads(line) for line in text.splitlines()]


def csv_of(project: Project, **kwargs) -> list[dict]:
    text = "".join(exports.csv_chunks(project, **kwargs))
    return list(csv.DictReader(io.StringIO(text)))


# --- Content ----------------------------------------------------------------------------------


def test_jsonl_has_one_line_per_item_with_each_annotators_answer(project, labelled):
    records = jsonl_of(project)
    assert len(records) == 20
    assert [r["external_id"] for r in records[:2]] == ["t0", "t1"]
    first = records[0]
    assert first["item_id"] == labelled["t0"].pk
    assert first["text"] == "review number 0"
    assert first["metadata"] == {"source": "web", "stars": 4}
    assert [
        (a["annotator"], a["labels"], a["skipped"], a["time_spent_ms"])
        for a in first["annotations"]
    ] == [("annie", ["positive"], False, 1200), ("rev", ["neutral"], False, 800)]
    a = labelled["first"]
    assert first["annotations"][0]["created_at"] == a.created_at.isoformat()
    assert first["annotations"][0]["updated_at"] == a.updated_at.isoformat()
    assert records[1]["annotations"] == [
        {
            "annotator": "annie",
            "labels": [],
            "skipped": True,
            "time_spent_ms": 300,
            "created_at": labelled["skipped"].created_at.isoformat(),
            "updated_at": labelled["skipped"].updated_at.isoformat(),
        }
    ]
    assert all(r["annotations"] == [] for r in records[2:])
    assert first["gold"] == {"labels": None, "source": "tie", "agreement": 0.5}
    assert records[1]["gold"] is None  # skipped only: no gold label


def test_an_edited_answer_is_exported_as_it_stands_now(project, labelled, annotator):
    answer(labelled["t0"], annotator, ["negative"])
    [mine] = [a for a in jsonl_of(project)[0]["annotations"] if a["annotator"] == "annie"]
    assert mine["labels"] == ["negative"]


def test_csv_has_a_row_per_answer_and_one_empty_row_per_unlabelled_item(project, labelled):
    rows = csv_of(project)
    assert list(rows[0]) == [*exports.CSV_COLUMNS, "meta.source", "meta.stars"]
    assert len(rows) == 2 + 1 + 18
    t0_rows = [r for r in rows if r["external_id"] == "t0"]
    assert [(r["annotator"], r["labels"], r["skipped"]) for r in t0_rows] == [
        ("annie", "positive", "false"),
        ("rev", "neutral", "false"),
    ]
    assert t0_rows[0]["item_id"] == str(labelled["t0"].pk)
    assert t0_rows[0]["created_at"] == labelled["first"].created_at.isoformat()
    # Two answers, two classes: a tie has no gold label until a reviewer decides.
    assert {(r["gold_labels"], r["gold_source"]) for r in t0_rows} == {("", "tie")}
    [t1] = [r for r in rows if r["external_id"] == "t1"]
    assert (t1["annotator"], t1["labels"], t1["skipped"]) == ("annie", "", "true")
    assert (t1["gold_labels"], t1["gold_source"]) == ("", "")
    [t5] = [r for r in rows if r["external_id"] == "t5"]
    assert t5 == {
        "item_id": str(Item.objects.get(project=project, external_id="t5").pk),
        "external_id": "t5",
        "text": "review number 5",
        "status": "incomplete",
        "gold_labels": "",
        "gold_source": "",
        "annotator": "",
        "labels": "",
        "skipped": "",
        "created_at": "",
        "updated_at": "",
        "meta.source": "",
        "meta.stars": "",
    }
    assert {(r["text"], r["status"], r["meta.source"], r["meta.stars"]) for r in t0_rows} == {
        ("review number 0", "complete", "web", "4")
    }


def test_an_item_still_waiting_for_answers_is_exported_as_incomplete_not_unanimous(
    project, annotator, reviewer
):
    """At overlap 2 one answer is not a gold label, however unanimous it looks."""
    project_set_overlap(project, 2)
    t0 = Item.objects.get(project=project, external_id="t0")
    answer(t0, annotator, ["positive"])
    [first] = [r for r in jsonl_of(project) if r["external_id"] == "t0"]
    assert first["status"] == "incomplete"
    assert first["gold"] == {"labels": None, "source": "incomplete", "agreement": None}
    [row] = [r for r in csv_of(project) if r["external_id"] == "t0"]
    assert (row["status"], row["gold_labels"], row["gold_source"]) == (
        "incomplete",
        "",
        "incomplete",
    )

    answer(t0, reviewer, ["positive"])
    [first] = [r for r in jsonl_of(project) if r["external_id"] == "t0"]
    assert first["status"] == "complete"
    assert first["gold"] == {"labels": ["positive"], "source": "unanimous", "agreement": 1.0}


def test_a_reviewers_decision_on_an_incomplete_item_is_exported_as_decided(
    project, annotator, reviewer
):
    project_set_overlap(project, 3)
    t0 = Item.objects.get(project=project, external_id="t0")
    answer(t0, annotator, ["positive"])
    review = review_flag(item=t0, user=reviewer)
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["neutral"])
    [first] = [r for r in jsonl_of(project) if r["external_id"] == "t0"]
    assert first["status"] == "incomplete"
    assert (first["gold"]["labels"], first["gold"]["source"]) == (["neutral"], "adjudicated")


def test_csv_metadata_columns_and_text_are_neutralised_against_formulas(db):
    evil = project_create(name="Evil meta", classes=["a"])
    [item] = add_text_items(evil, ["=1+1"])
    Item.objects.filter(pk=item.pk).update(
        metadata={"=cmd": "@SUM(A1)", "n": -3, "tags": ["x", "y"], "note": None}
    )
    [row] = csv_of(evil)
    assert row["text"] == "'=1+1"
    assert row["meta.=cmd"] == "'@SUM(A1)"
    assert (row["meta.n"], row["meta.tags"], row["meta.note"]) == ("'-3", '["x", "y"]', "")
    header = "".join(exports.csv_chunks(evil)).splitlines()[0]
    assert header.endswith("meta.=cmd,meta.n,meta.note,meta.tags")  # "meta." leads: harmless


def test_csv_joins_multiple_labels_with_a_bar(db):
    multi = project_create(
        name="Topics", labeling_mode=Project.LabelingMode.MULTI, classes=["sport", "tech", "art"]
    )
    [item] = add_text_items(multi, ["a match report about a robot"])
    user = make_user("multi")
    Membership.objects.create(project=multi, user=user)
    answer(item, user, ["tech", "sport"])
    [row] = csv_of(multi)
    assert row["labels"] == "sport|tech"  # schema order
    assert jsonl_of(multi)[0]["annotations"][0]["labels"] == ["sport", "tech"]


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_neutralises_cells_a_spreadsheet_would_run_as_formulas(db, start):
    evil = project_create(name=f"Evil {ord(start)}", classes=[f"{start}label", "plain"])
    if not start.strip():  # the services strip names; older data may still hold such a one
        LabelClass.objects.filter(project=evil, name="label").update(name=f"{start}label")
    [item] = add_text_items(evil, ["x"])
    Item.objects.filter(pk=item.pk).update(external_id=f'{start}HYPERLINK("http://x.test")')
    user = make_user(f"{start}user".strip() or "user")
    if user.username != f"{start}user":  # usernames cannot hold whitespace: set it directly
        type(user).objects.filter(pk=user.pk).update(username=f"{start}user")
        user.refresh_from_db()
    Membership.objects.create(project=evil, user=user)
    answer(Item.objects.get(pk=item.pk), user, [f"{start}label"])
    [row] = csv_of(evil)
    assert row["external_id"] == f'\'{start}HYPERLINK("http://x.test")'
    assert row["annotator"] == f"'{start}user"
    assert row["labels"] == f"'{start}label"
    assert row["item_id"] == str(item.pk)  # our own numbers are left alone


def test_safe_cell_leaves_ordinary_text_alone():
    assert exports.safe_cell("positive") == "positive"
    assert exports.safe_cell("a=b") == "a=b"
    assert exports.safe_cell("") == ""
    assert exports.safe_cell("-3") == "'-3"


def test_small_chunks_give_the_same_export_as_one_big_chunk(project, labelled):
    for fmt in ("jsonl", "csv"):
        whole = "".join(exports.export_chunks(project, fmt, chunk_size=1000))
        pieces = list(exports.export_chunks(project, fmt, chunk_size=3))
        assert len(pieces) >= 7
        assert "".join(pieces) == whole


def test_an_image_project_exports_the_stored_image_path(db, media_root):
    images = project_create(name="Pics", item_kind=Project.ItemKind.IMAGE, classes=["cat"])
    item = Item(project=images, external_id="cats/1.png", image_format="PNG")
    item.image.save("1.png", ContentFile(b"\x89PNG"), save=False)
    item.save()
    [record] = jsonl_of(images)
    assert record["external_id"] == "cats/1.png"
    assert record["image"] == item.image.name
    assert "text" not in record
    [row] = csv_of(images)
    assert row["image"] == item.image.name
    assert "text" not in row


def test_an_empty_project_exports_only_the_csv_header(db):
    empty = project_create(name="Empty", classes=["a"])
    assert "".join(exports.jsonl_chunks(empty)) == ""
    assert "".join(exports.csv_chunks(empty)) == ",".join(exports.CSV_COLUMNS) + "\r\n"


def test_only_the_projects_own_items_are_exported(project, other_project, labelled):
    ids = {r["external_id"] for r in jsonl_of(project)}
    assert "o0" not in ids and len(ids) == 20


# --- The download views -----------------------------------------------------------------------


@pytest.mark.parametrize("who", ["reviewer", "project_admin"])
@pytest.mark.parametrize(
    ("route", "content_type"),
    [
        ("project_export_jsonl", "application/x-ndjson; charset=utf-8"),
        ("project_export_csv", "text/csv; charset=utf-8"),
    ],
)
def test_reviewers_and_admins_download_a_streamed_attachment(
    client, project, labelled, who, route, content_type, request
):
    client.force_login(request.getfixturevalue(who))
    response = client.get(reverse(route, args=[project.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    fmt = route.rsplit("_", 1)[1]
    assert response["Content-Disposition"] == (
        f'attachment; filename="sentiment-{project.pk}-labels.{fmt}"'
    )
    assert body(response) == "".join(exports.export_chunks(project, fmt))


def test_the_download_filename_is_safe_whatever_the_project_name(client, db):
    odd = project_create(name='../"Évaluation"\r\nX-Evil: 1; rm -rf', classes=["a"])
    user = make_user("odd")
    Membership.objects.create(project=odd, user=user, role=Membership.Role.REVIEWER)
    client.force_login(user)
    response = client.get(reverse("project_export_csv", args=[odd.pk]))
    assert response["Content-Disposition"] == (
        f'attachment; filename="evaluation-x-evil-1-rm-rf-{odd.pk}-labels.csv"'
    )


@pytest.mark.parametrize("route", ["project_export_jsonl", "project_export_csv"])
def test_annotators_may_not_export(client, project, annotator, route):
    client.force_login(annotator)
    assert client.get(reverse(route, args=[project.pk])).status_code == 403


@pytest.mark.parametrize("route", ["project_export_jsonl", "project_export_csv"])
def test_outsiders_get_not_found_and_anonymous_visitors_log_in(client, project, outsider, route):
    url = reverse(route, args=[project.pk])
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous.url.startswith(reverse("login"))
    client.force_login(outsider)
    assert client.get(url).status_code == 404


def test_exports_answer_only_get(client, project, reviewer):
    client.force_login(reviewer)
    assert client.post(reverse("project_export_csv", args=[project.pk])).status_code == 405


def test_the_project_page_links_exports_for_reviewers_not_annotators(
    client, project, reviewer, annotator
):
    url = reverse("project_export_csv", args=[project.pk])
    client.force_login(reviewer)
    assert url in client.get(reverse("project_detail", args=[project.pk])).content.decode()
    client.force_login(annotator)
    assert url not in client.get(reverse("project_detail", args=[project.pk])).content.decode()


@pytest.mark.django_db(transaction=True)
async def test_under_asgi_the_export_streams_through_an_async_iterator(fast_passwords):
    from asgiref.sync import sync_to_async

    def setup():
        proj = project_create(name="Async", classes=["a", "b"])
        add_text_items(proj, [f"text {i}" for i in range(2500)])
        user = make_user("asyncrev")
        Membership.objects.create(project=proj, user=user, role=Membership.Role.REVIEWER)
        expected = "".join(exports.jsonl_chunks(proj))
        return proj, user, expected

    proj, user, expected = await sync_to_async(setup)()
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(reverse("project_export_jsonl", args=[proj.pk]))
    assert response.status_code == 200
    assert response.is_async  # not a sync generator Django would read whole into memory
    parts = [part async for part in response.streaming_content]
    assert len(parts) >= 2  # 2,500 items arrive in several chunks
    assert b"".join(parts).decode() == expected
    await sync_to_async(connections.close_all)()


# --- The management command -------------------------------------------------------------------


def test_the_command_writes_jsonl_to_stdout(project, labelled):
    out = io.StringIO()
    call_command("export_labels", "Sentiment", stdout=out, stderr=io.StringIO())
    assert out.getvalue() == "".join(exports.jsonl_chunks(project))
    assert len(out.getvalue().splitlines()) == 20


def test_the_command_writes_csv_to_a_file(project, labelled, tmp_path):
    target = tmp_path / "labels.csv"
    err = io.StringIO()
    call_command(
        "export_labels", str(project.pk), "--format", "csv", "--output", str(target), stderr=err
    )
    assert target.read_bytes().decode() == "".join(exports.csv_chunks(project))
    assert f"to {target}" in err.getvalue()


def test_the_command_takes_the_output_file_as_an_argument_like_import_items(
    project, labelled, tmp_path
):
    target = tmp_path / "labels.jsonl"
    err = io.StringIO()
    call_command("export_labels", "Sentiment", str(target), stderr=err)
    assert target.read_bytes().decode() == "".join(exports.jsonl_chunks(project))
    assert f"to {target}" in err.getvalue()
    out = io.StringIO()
    call_command("export_labels", "Sentiment", "-", "--format", "csv", stdout=out, stderr=err)
    assert out.getvalue() == "".join(exports.csv_chunks(project))


def test_the_command_refuses_two_different_output_files(project, tmp_path):
    with pytest.raises(CommandError, match="Two output files"):
        call_command(
            "export_labels", "Sentiment", str(tmp_path / "a"), "--output", str(tmp_path / "b")
        )
    assert not list(tmp_path.iterdir())


def test_answers_on_another_projects_items_with_interleaved_ids_stay_out(
    project, other_project, annotator, outsider
):
    # Items of the two projects created alternately, so their ids interleave.
    mine, theirs = [], []
    for i in range(3):
        mine += add_text_items(project, [f"mine {i}"], prefix=f"m{i}-")
        theirs += add_text_items(other_project, [f"theirs {i}"], prefix=f"x{i}-")
    answer(theirs[1], outsider, ["a"])
    answer(mine[1], annotator, ["positive"])
    records = {r["external_id"]: r for r in jsonl_of(project, chunk_size=2)}
    assert records["m1-0"]["annotations"][0]["annotator"] == "annie"
    assert all(a["annotator"] != "otto" for r in records.values() for a in r["annotations"])
    assert not any(r["external_id"].startswith("x") for r in records.values())
    assert all(r["annotator"] != "otto" for r in csv_of(project, chunk_size=2))
