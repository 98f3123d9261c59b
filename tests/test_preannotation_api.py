"""Predictions and vectors over the API: bulk uploads stored all or nothing, with every bad
row's index and field, and the roles that may read and write them."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from annotations.models import ItemVector, PreAnnotation
from tests.conftest import add_text_items

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def api_as(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def post_rows(client, project, kind: str, rows, *, jsonl: bool = False):
    url = reverse(f"api-{kind}-list", args=[project.pk])
    if jsonl:
        body = "\n".join(json.dumps(r) for r in rows) + "\n"
        return client.generic("POST", url, body, content_type="application/x-ndjson")
    return client.generic("POST", url, json.dumps(rows), content_type="application/json")


def test_admin_uploads_predictions_as_an_array_and_lists_them_by_model(project, project_admin):
    client = api_as(project_admin)
    rows = [
        {"item": "t0", "model": "bert", "label": "positive", "score": 0.9},
        {"item": "t1", "model": "bert", "scores": {"positive": 0.4, "negative": 0.6}},
        {"item": "t1", "model": "rules", "label": "neutral"},
    ]
    response = post_rows(client, project, "prediction", rows)
    assert response.status_code == 201, response.json()
    assert response.json() == {"rows": 3, "stored": 3, "models": ["bert", "rules"]}
    listed = client.get(reverse("api-prediction-list", args=[project.pk]), {"model": "bert"})
    got = {(r["item"], tuple(r["labels"])) for r in listed.json()["results"]}
    assert got == {("t0", ("positive",)), ("t1", ("negative",))}


def test_predictions_as_json_lines_replace_earlier_ones_of_the_same_model(project, project_admin):
    add_text_items(project, ["numbered"], prefix="3")  # external id "30": a number in JSON
    client = api_as(project_admin)
    post_rows(client, project, "prediction", [{"item": "t0", "model": "m", "label": "positive"}])
    response = post_rows(
        client,
        project,
        "prediction",
        [
            {"item": "t0", "model": "m", "label": "negative"},
            {"item": 30, "model": "m", "label": "neutral"},
        ],
        jsonl=True,
    )
    assert response.status_code == 201, response.json()
    stored = dict(PreAnnotation.objects.values_list("item__external_id", "labels"))
    assert stored == {"t0": ["negative"], "30": ["neutral"]}


def test_one_bad_row_stores_nothing_and_names_every_row_and_field(project, project_admin):
    rows = [{"item": f"t{i % 20}", "model": "m", "label": "positive"} for i in range(2500)]
    rows[5] = {"item": "t5", "model": "m", "label": "angry"}
    rows[2100] = {"item": "nope", "model": "m", "label": "positive"}
    rows[2200] = {"item": "t2", "model": "m", "scores": {"positive": 2}}
    rows[2300] = {"item": "t3", "label": "positive"}
    response = post_rows(api_as(project_admin), project, "prediction", rows)
    assert response.status_code == 400
    errors = [(e["row"], e["field"]) for e in response.json()["errors"]]
    assert errors == [(5, "label"), (2200, "scores"), (2300, "model"), (2100, "item")]
    assert "nothing was stored" in response.json()["detail"]
    assert not PreAnnotation.objects.exists()


def test_malformed_json_lines_name_the_record(project, project_admin):
    url = reverse("api-prediction-list", args=[project.pk])
    body = '{"item": "t0", "model": "m", "label": "positive"}\n{"item": "t1", \n'
    response = api_as(project_admin).generic("POST", url, body, content_type="application/x-ndjson")
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error["row"] == 1 and "line 2" in error["message"]
    assert not PreAnnotation.objects.exists()


def test_a_truncated_array_stores_nothing(project, project_admin):
    url = reverse("api-prediction-list", args=[project.pk])
    body = '[{"item": "t0", "model": "m", "label": "positive"}, {"item": "t1"'
    response = api_as(project_admin).generic("POST", url, body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["row"] == 1
    assert not PreAnnotation.objects.exists()


def test_admin_deletes_one_models_predictions(project, project_admin):
    client = api_as(project_admin)
    post_rows(
        client,
        project,
        "prediction",
        [
            {"item": "t0", "model": "a", "label": "positive"},
            {"item": "t0", "model": "b", "label": "negative"},
        ],
    )
    url = reverse("api-prediction-list", args=[project.pk])
    assert client.delete(url).status_code == 400
    response = client.delete(f"{url}?model=a")
    assert response.json() == {"deleted": 1}
    assert list(PreAnnotation.objects.values_list("model_name", flat=True)) == ["b"]


def test_members_read_admins_write_outsiders_get_404(
    project, annotator, reviewer, project_admin, outsider
):
    rows = [{"item": "t0", "model": "m", "label": "positive"}]
    url = reverse("api-prediction-list", args=[project.pk])
    for user in (annotator, reviewer):
        assert post_rows(api_as(user), project, "prediction", rows).status_code == 403
        assert api_as(user).delete(f"{url}?model=m").status_code == 403
        assert (
            post_rows(api_as(user), project, "vector", [{"item": "t0", "vector": [1]}]).status_code
            == 403
        )
    assert post_rows(api_as(project_admin), project, "prediction", rows).status_code == 201
    assert api_as(annotator).get(url).json()["results"][0]["item"] == "t0"
    for response in (
        post_rows(api_as(outsider), project, "prediction", rows),
        api_as(outsider).get(url),
        api_as(outsider).delete(f"{url}?model=m"),
        api_as(outsider).get(reverse("api-vector-list", args=[project.pk])),
    ):
        assert response.status_code == 404
    assert APIClient().get(url).status_code in (401, 403)
    assert PreAnnotation.objects.count() == 1


def test_vectors_upload_fix_the_length_and_read_back(project, project_admin, annotator, outsider):
    client = api_as(project_admin)
    rows = [{"item": f"t{i}", "vector": [i, 0.5, -1.0]} for i in range(3)]
    response = post_rows(client, project, "vector", rows, jsonl=True)
    assert response.status_code == 201, response.json()
    assert response.json() == {"rows": 3, "stored": 3, "dim": 3}
    item = project.items.get(external_id="t2")
    url = reverse("api-item-vector", args=[project.pk, item.pk])
    got = api_as(annotator).get(url).json()
    assert got == {"item": "t2", "item_id": item.pk, "dim": 3, "vector": [2.0, 0.5, -1.0]}
    assert api_as(outsider).get(url).status_code == 404
    other = project.items.get(external_id="t9")
    assert client.get(reverse("api-item-vector", args=[project.pk, other.pk])).status_code == 404
    summary = client.get(reverse("api-vector-list", args=[project.pk])).json()
    assert summary == {"dim": 3, "count": 3}


def test_a_vector_of_another_length_or_not_numbers_stores_nothing(project, project_admin):
    client = api_as(project_admin)
    post_rows(client, project, "vector", [{"item": "t0", "vector": [1, 2]}])
    rows = [
        {"item": "t1", "vector": [1, 2]},
        {"item": "t2", "vector": [1, 2, 3]},
        {"item": "t3", "vector": [1, "x"]},
        {"item": "t4"},
        {"item": "t5", "vector": [1, 2], "colour": "red"},
    ]
    response = post_rows(client, project, "vector", rows)
    assert response.status_code == 400
    errors = [(e["row"], e["field"]) for e in response.json()["errors"]]
    assert errors == [(1, "vector"), (2, "vector"), (3, "vector"), (4, "colour")]
    assert "have 2 values" in response.json()["errors"][0]["message"]
    assert ItemVector.objects.count() == 1


def test_a_body_over_the_upload_limit_is_refused(project, project_admin, settings):
    settings.IMPORT_MAX_UPLOAD_BYTES = 100
    rows = [{"item": f"t{i}", "model": "m", "label": "positive"} for i in range(10)]
    response = post_rows(api_as(project_admin), project, "prediction", rows)
    assert response.status_code == 413
    assert not PreAnnotation.objects.exists()


def test_json_lines_with_a_byte_order_mark_and_blank_lines(project, project_admin):
    url = reverse("api-prediction-list", args=[project.pk])
    body = b'\xef\xbb\xbf{"item": "t0", "model": "m", "label": "positive"}\r\n\n'
    body += b'{"item": "t1", "model": "m", "label": "negative"}'
    response = api_as(project_admin).generic("POST", url, body, content_type="application/jsonl")
    assert response.status_code == 201, response.json()
    assert response.json()["stored"] == 2
