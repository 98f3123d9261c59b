"""Label Studio tasks in and out: an export of a classification project with two annotators and
a model's prediction (tests/fixtures/formats/labelstudio_export.json, in Label Studio's own JSON
export format) imports with its answers, annotators, times and prediction, and exports back as
equivalent tasks."""

from __future__ import annotations

import io
import json
from pathlib import Path
from uuid import uuid4

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from annotations import exports, imports
from annotations.models import (
    Annotation,
    GoldLabel,
    GoldSource,
    Item,
    Membership,
    PreAnnotation,
    Project,
    Review,
)
from annotations.services import project_create
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.django_db
FIXTURES = Path(__file__).parent / "fixtures" / "formats"
LS_EXPORT = FIXTURES / "labelstudio_export.json"
User = get_user_model()


@pytest.fixture
def ls_project(db) -> Project:
    return project_create(
        name="Reviews from Label Studio", classes=["Positive", "Negative", "Neutral"], overlap=2
    )


def import_ls(project: Project, path: Path = LS_EXPORT, fmt: str | None = None):
    with path.open("rb") as handle:
        return imports.import_file(project=project, fileobj=handle, filename=path.name, fmt=fmt)


def failure(project: Project, content: str, name: str = "tasks.json") -> list[str]:
    with pytest.raises(imports.ImportFailed) as caught:
        imports.import_file(
            project=project, fileobj=io.BytesIO(content.encode()), filename=name, fmt="labelstudio"
        )
    return caught.value.messages


def test_a_label_studio_export_is_recognised_from_its_content():
    with LS_EXPORT.open("rb") as handle:
        assert imports.sniff_format(handle, "export.json") == "labelstudio"


def test_a_label_studio_export_imports_items_answers_annotators_and_the_prediction(ls_project):
    result = import_ls(ls_project)
    assert result.created == 3
    items = {i.external_id: i for i in Item.objects.filter(project=ls_project)}
    assert set(items) == {"101", "102", "103"}
    first = items["101"]
    assert first.text == "The checkout was quick and the staff were lovely."
    assert first.metadata == {"source": "store-survey", "stars": 5, "meta": {"batch": "2024-04"}}
    # Two annotators there: two inactive accounts here, annotators of the project.
    one, two = (
        User.objects.get(username="labelstudio-1"),
        User.objects.get(username="labelstudio-2"),
    )
    assert not one.is_active and not one.has_usable_password()
    assert set(
        Membership.objects.filter(project=ls_project).values_list("user__username", "role")
    ) == {("labelstudio-1", "annotator"), ("labelstudio-2", "annotator")}
    answer = Annotation.objects.get(item=first, annotator=one)
    assert answer.labels == ["Positive"]
    assert answer.time_spent_ms == 4215
    assert answer.created_at.isoformat() == "2024-05-02T09:14:03.281611+00:00"
    cancelled = Annotation.objects.get(item=items["103"], annotator=two)
    assert cancelled.skipped and cancelled.labels == []
    # The prediction is a prediction, never an answer.
    [prediction] = PreAnnotation.objects.filter(item=first)
    assert (prediction.model_name, prediction.labels, prediction.score) == (
        "distilbert-sst2-v3",
        ["Positive"],
        0.93,
    )
    assert Annotation.objects.filter(project=ls_project).count() == 6


def test_imported_answers_keep_counts_completeness_and_gold_labels_right(ls_project):
    import_ls(ls_project)
    ls_project.refresh_from_db()
    items = {i.external_id: i for i in Item.objects.filter(project=ls_project)}
    # Overlap 2: the two agreeing answers complete 101, the two disagreeing ones 102; 103 has
    # one answer and a skip, so it waits for one more annotator.
    assert (items["101"].annotation_count, items["101"].needs_annotation) == (2, False)
    assert (items["102"].annotation_count, items["102"].needs_annotation) == (2, False)
    assert (items["103"].annotation_count, items["103"].needs_annotation) == (1, True)
    assert (ls_project.item_count, ls_project.complete_count) == (3, 2)
    gold = GoldLabel.objects.get(item=items["101"])
    assert (gold.labels, gold.source, gold.agreement) == (["Positive"], GoldSource.UNANIMOUS, 1.0)
    assert GoldLabel.objects.get(item=items["102"]).source == GoldSource.TIE
    assert Review.objects.get(item=items["102"]).reasons == [Review.Reason.DISAGREEMENT]


def test_a_second_import_reuses_the_annotators_accounts(ls_project):
    import_ls(ls_project)
    other = project_create(name="Second batch", classes=["Positive", "Negative", "Neutral"])
    import_ls(other)
    assert User.objects.filter(username__startswith="labelstudio-").count() == 2


def test_an_annotator_known_by_email_is_the_existing_account(ls_project):
    colleague = User.objects.create_user(username="maria", email="maria@example.com")
    content = json.loads(LS_EXPORT.read_text())
    content[0]["annotations"][0]["completed_by"] = {
        "id": 1,
        "email": "Maria@example.com",
        "first_name": "Maria",
        "last_name": "Lopez",
    }
    with io.BytesIO(json.dumps(content).encode()) as handle:
        imports.import_file(project=ls_project, fileobj=handle, filename="t.json")
    assert Annotation.objects.get(item__external_id="101", annotator=colleague).labels == [
        "Positive"
    ]


def test_label_studio_round_trip_gives_equivalent_tasks(ls_project, tmp_path):
    import_ls(ls_project)
    out = tmp_path / "ls.json"
    call_command("export_labels", ls_project.name, "--format", "labelstudio", "--output", out)
    original = {t["id"]: t for t in json.loads(LS_EXPORT.read_text())}
    exported = {t["id"]: t for t in json.loads(out.read_text())}
    assert set(exported) == set(original)
    for task_id, task in original.items():
        back = exported[task_id]
        assert back["data"] == task["data"]
        assert back["meta"] == task["meta"]
        assert _answers(back) == _answers(task)
        assert _predictions(back) == _predictions(task)
    # …and importing the export into a fresh project gives the same data again.
    again = project_create(name="Again", classes=["Positive", "Negative", "Neutral"], overlap=2)
    import_ls(again, out)
    assert _state(again) == _state(ls_project)


def _answers(task: dict) -> set:
    def who(completed_by):
        return completed_by["id"] if isinstance(completed_by, dict) else completed_by

    return {
        (
            who(a["completed_by"]),
            tuple(c for r in a["result"] for c in r["value"]["choices"]),
            a["was_cancelled"],
            a["lead_time"],
            a["created_at"].replace("Z", "")[:26],
        )
        for a in task["annotations"]
    }


def _predictions(task: dict) -> set:
    return {
        (
            p["model_version"],
            p["score"],
            tuple(c for r in p["result"] for c in r["value"]["choices"]),
        )
        for p in task["predictions"]
    }


def _state(project: Project) -> list:
    return [
        (
            item.external_id,
            item.text,
            item.metadata,
            item.annotation_count,
            item.needs_annotation,
            sorted(
                (a.annotator.username, tuple(a.labels), a.skipped, a.time_spent_ms, a.created_at)
                for a in item.annotations.select_related("annotator")
            ),
            sorted((p.model_name, tuple(p.labels), p.score) for p in item.preannotations.all()),
        )
        for item in Item.objects.filter(project=project).order_by("external_id")
    ]


def test_the_export_api_and_page_serve_label_studio_tasks(ls_project, client):
    import_ls(ls_project)
    admin = User.objects.create_user(username="boss", password="x-pass-123456")
    Membership.objects.create(project=ls_project, user=admin, role=Membership.Role.ADMIN)
    client.force_login(admin)
    response = client.get(f"/api/projects/{ls_project.pk}/items/export.labelstudio")
    assert response.status_code == 200
    tasks = json.loads(b"".join(response.streaming_content))
    assert [t["id"] for t in tasks] == [101, 102, 103]
    assert "labelstudio.json" in response["Content-Disposition"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"id": 1, "text": "no data object"}]', 'tasks.json task 1 (id 1): no "data" object'),
        (
            '[{"id": 1, "data": {"body": "x"}}]',
            "tasks.json task 1 (id 1): no field 'text' in data; its fields are: 'body'",
        ),
        (
            '[{"id": 1, "data": {"text": "x"}, "annotations": [{"completed_by": 1, "result": '
            '[{"type": "labels", "value": {"labels": ["Positive"]}}]}]}]',
            "tasks.json task 1 (id 1): annotation 1, result 1: a 'labels' result; only "
            "classification (choices) results can be imported",
        ),
        (
            '[{"id": 1, "data": {"text": "x"}}, {"id": 2, "data": {"text": "y"}, "annotations": '
            '[{"completed_by": 1, "result": [{"type": "choices", "from_name": "s", '
            '"value": {"choices": ["Happy"]}}]}]}]',
            "tasks.json task 2 (id 2), annotation 1: Unknown label(s) 'Happy'",
        ),
        (
            '[{"id": 1, "data": {"text": "x"}, "predictions": [{"model_version": "m", '
            '"score": 7, "result": [{"type": "choices", "value": {"choices": ["Positive"]}}]}]}]',
            'tasks.json task 1 (id 1), prediction 1: "score" must be between 0 and 1',
        ),
        (
            '[{"id": 1, "data": {"text": "x"}, "annotations": [{"completed_by": 1, '
            '"created_at": "yesterday", "result": []}]}]',
            "tasks.json task 1 (id 1): annotation 1: created_at is not an ISO 8601 date",
        ),
        (
            '[{"id": 1, "data": {"text": "x"}}, {"id": 1, "data": {"text": "y"}}]',
            "tasks.json task 2 (id 1): id '1' is also on task 1 (id 1)",
        ),
        ('[{"id": 1, "data": {"text": "x"}},\n {"id": 2, "data": {"text": ', "tasks.json line 2"),
    ],
)
def test_a_bad_task_imports_nothing_and_says_where(ls_project, content, message):
    messages = failure(ls_project, content)
    assert any(m.startswith(message) for m in messages), messages
    assert not Item.objects.filter(project=ls_project).exists()
    assert not User.objects.filter(username__startswith="labelstudio-").exists()


def test_a_bad_answer_late_in_the_file_leaves_no_items_or_accounts(ls_project):
    tasks = json.loads(LS_EXPORT.read_text())
    tasks[2]["annotations"][0]["result"][0]["value"]["choices"] = ["Positive", "Negative"]
    messages = failure(ls_project, json.dumps(tasks))
    assert messages == [
        "tasks.json task 3 (id 103), annotation 1: Choose exactly one label (single-label project)."
    ]
    assert Item.objects.filter(project=ls_project).count() == 0
    assert Annotation.objects.count() == 0 and PreAnnotation.objects.count() == 0
    assert not User.objects.filter(username__startswith="labelstudio-").exists()


def test_exports_module_lists_the_new_formats():
    assert {"labelstudio", "doccano"} <= set(exports.FORMATS)


def test_a_task_whose_text_is_already_in_the_project_is_reported_and_can_be_skipped(ls_project):
    import_ls(ls_project)
    tasks = json.loads(LS_EXPORT.read_text())
    tasks[1]["id"] = 202
    with io.BytesIO(json.dumps([tasks[1]]).encode()) as handle:
        result = imports.import_file(
            project=ls_project, fileobj=handle, filename="again.json", skip_duplicates=True
        )
    assert (result.created, result.skipped) == (0, 1)
    assert result.duplicates == ("task 1 (id 202) duplicates existing item '102'",)


def test_metadata_with_a_nul_character_is_refused_with_its_place(ls_project):
    content = '[{"id": 1, "data": {"text": "x", "note": "a\\u0000b"}}]'
    assert failure(ls_project, content) == [
        "tasks.json record 1: contains a NUL character or an invalid \\u escape"
    ]


def test_importing_answers_into_a_busy_project_keeps_its_other_items_and_progress_right(
    ls_project,
):
    [done, waiting] = add_text_items(ls_project, ["already labelled", "not yet"], prefix="own")
    for name in ("ann1", "ann2"):
        user = make_user(name)
        Membership.objects.create(project=ls_project, user=user, role="annotator")
        submit_handed_out(item=done, annotator=user, labels=["Negative"], client_uuid=uuid4())
    import_ls(ls_project)
    ls_project.refresh_from_db()
    # 2 own items (one complete) and 3 imported (two complete).
    assert (ls_project.item_count, ls_project.complete_count) == (5, 3)
    done.refresh_from_db()
    waiting.refresh_from_db()
    assert (done.annotation_count, done.needs_annotation) == (2, False)
    assert (waiting.annotation_count, waiting.needs_annotation) == (0, True)
    assert GoldLabel.objects.get(item=done).labels == ["Negative"]
