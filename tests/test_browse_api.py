"""The data browser over the API, and one item's page and its API twin: the same filters,
sorts and cursor as the page, 400 naming a bad parameter, and an item's whole story."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    Membership,
    Review,
    ReviewEvent,
)
from curation.dataset_models import (
    DuplicateGroup,
    ItemDuplicate,
    ItemOutlier,
    ItemPrediction,
    LabelIssue,
    PredictionChange,
)
from curation.models import EvalSample
from tests.browse_seed import reference_filter, reference_order, seed_project
from tests.conftest import make_user

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def seeded(db):
    return seed_project(60)


@pytest.fixture
def api(seeded, client):
    rita = make_user("rita")
    Membership.objects.create(project=seeded.project, user=rita, role=Membership.Role.REVIEWER)
    client.force_login(rita)
    return client


def list_url(project) -> str:
    return f"/api/projects/{project.pk}/data/"


def all_results(client, url: str, params: dict) -> tuple[list[dict], int]:
    results, pages = [], 0
    response = client.get(url, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        results += body["results"]
        pages += 1
        if body["next"] is None:
            return results, pages
        response = client.get(body["next"])


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "-error"},
        {"status": "partly", "sort": "confidence"},
        {"disagrees": "1", "sort": "-agreement"},
        {"meta": "colour=green", "sort": "-outlier"},
        {"q": "delta", "predicted": "positive"},
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()),
)
def test_the_api_pages_through_the_matching_items_in_the_page_order(seeded, api, params):
    results, pages = all_results(api, list_url(seeded.project), {**params, "limit": "4"})
    filters = {k: v for k, v in params.items() if k != "sort"}
    expected = reference_order(reference_filter(seeded.items, filters), params.get("sort", "id"))
    assert [r["id"] for r in results] == expected
    assert pages == max(1, -(-len(expected) // 4))


def test_a_row_carries_the_columns_of_the_page(seeded, api):
    s = next(x for x in seeded.items if x.error is not None and x.confidence is not None)
    body = api.get(list_url(seeded.project), {"error_min": s.error, "cols": "colour,lang"}).json()
    row = next(r for r in body["results"] if r["id"] == s.pk)
    assert row["external_id"] == s.external_id
    assert row["status"] == s.status
    assert row["label_error"]["score"] == s.error
    assert row["prediction"]["confidence"] == s.confidence
    assert row["gold"]["labels"] == s.gold
    assert row["duplicate_group"] == s.group
    assert row["outlier_score"] == s.outlier
    assert row["metadata"] == {"colour": s.metadata["colour"], "lang": s.metadata.get("lang")}
    assert body["count_exact"] is True


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "nope"}, "status"),
        ({"error_min": "x"}, "error_min"),
        ({"sort": "text"}, "sort"),
        ({"after": "zzz"}, "after"),
        ({"limit": "100000"}, "limit"),
        ({"meta": "novalue"}, "meta"),
    ],
)
def test_a_bad_parameter_answers_400_naming_it(seeded, api, params, field):
    response = api.get(list_url(seeded.project), params)
    assert response.status_code == 400
    assert field in response.json()


# --- One item's story -------------------------------------------------------------------------


@pytest.fixture
def story(project, reviewer, annotator, project_admin):
    """An item with two answers (one edited), a gold label, a review decided, predictions by
    three model versions, an evaluation sample, a label-error flag, a duplicate and neighbours."""
    item, twin, near = list(project.items.order_by("id")[:3])
    now = timezone.now()
    first = Annotation.objects.create(
        project=project, item=item, annotator=annotator, labels=["positive"]
    )
    Annotation.objects.create(
        project=project, item=item, annotator=project_admin, labels=["neutral"]
    )
    AnnotationRevision.objects.create(
        annotation=first,
        client_uuid=uuid.uuid4(),
        labels=["positive"],
        previous_labels=["negative"],
    )
    GoldLabel.objects.create(
        item=item,
        project=project,
        labels=["positive"],
        source="adjudicated",
        agreement=0.5,
        answers=2,
        updated_at=now,
    )
    review = Review.objects.create(
        project=project,
        item=item,
        status="decided",
        reasons=["disagreement"],
        labels=["positive"],
        decided_by=reviewer,
        decided_at=now,
    )
    ReviewEvent.objects.create(
        review=review, actor=reviewer, action="decide", labels=["positive"], comment="clear case"
    )
    for version, label, p in [(1, "neutral", 0.4), (4, "negative", 0.7), (6, "positive", 0.9)]:
        PredictionChange.objects.create(
            item=item,
            project=project,
            version=version,
            labels=[label],
            confidence=p,
            created_at=now - timedelta(minutes=10 - version),
        )
    ItemPrediction.objects.create(
        item=item,
        project=project,
        labels=["positive"],
        label="positive",
        confidence=0.9,
        version=6,
        updated_at=now,
    )
    EvalSample.objects.create(
        project=project,
        item=item,
        predicted=["neutral"],
        confidence=0.4,
        predicted_by=1,
        truth=["positive"],
        correct=False,
    )
    LabelIssue.objects.create(
        item=item,
        project=project,
        gold=["positive"],
        score=0.83,
        suggested="negative",
        probabilities={"negative": 0.8, "positive": 0.15, "neutral": 0.05},
        status="flagged",
        updated_at=now,
    )
    group = DuplicateGroup.objects.create(project=project, kind="near", size=2, conflicting=True)
    ItemDuplicate.objects.create(item=item, group=group, project=project, similarity=0.97)
    ItemDuplicate.objects.create(item=twin, group=group, project=project, similarity=0.97)
    ItemOutlier.objects.create(
        item=item,
        project=project,
        score=1.7,
        neighbours=[[near.pk, 0.88], [999999, 0.5]],
        updated_at=now,
    )
    return item, twin, near


def test_the_item_page_tells_the_items_whole_story(client, project, reviewer, story):
    item, twin, near = story
    client.force_login(reviewer)
    response = client.get(f"/projects/{project.pk}/data/items/{item.pk}/?back=status%3Ddecided")
    assert response.status_code == 200
    html = response.content.decode()
    for text in [
        "annie",  # an answer with who
        "negative →",  # the edit of it
        "Adjudicated by a reviewer",  # the gold label's source
        "clear case",  # the decision's comment
        "v1",
        "v4",
        "v6",  # predictions across versions
        "Evaluation sample",
        "0.83",  # the label-error score
        twin.external_id,  # the duplicate
        near.external_id,  # more like this
        f"/projects/{project.pk}/data/?status=decided",  # back to the filtered list
    ]:
        assert text in html, text


def test_the_item_api_returns_what_the_page_shows(client, project, reviewer, story):
    item, twin, near = story
    client.force_login(reviewer)
    body = client.get(f"/api/projects/{project.pk}/data/items/{item.pk}/").json()
    assert [a["annotator"] for a in body["answers"]] == ["annie", "padmin"]
    assert body["answers"][0]["edits"][0]["previous"] == ["negative"]
    assert [e["what"] for e in body["history"]] == ["answered", "answered", "edited", "decided"]
    assert body["history"][0]["labels"] == ["negative"]  # the first version of the edited one
    assert [c["version"] for c in body["prediction_changes"]] == [1, 4, 6]
    assert body["prediction"]["version"] == 6
    assert body["label_issue"]["suggested"] == "negative"
    assert [m["id"] for m in body["duplicates"]["members"]] == [twin.pk]
    assert [n["id"] for n in body["neighbours"]] == [near.pk]  # a missing id is left out
    assert body["review"]["reasons"] == ["Annotators disagree"]


def test_more_like_this_says_when_it_is_not_computed(client, project, reviewer):
    client.force_login(reviewer)
    item = project.items.first()
    html = client.get(f"/projects/{project.pk}/data/items/{item.pk}/").content.decode()
    assert "Not computed yet" in html
    body = client.get(f"/api/projects/{project.pk}/data/items/{item.pk}/").json()
    assert body["neighbours"] is None


def test_an_item_of_another_project_is_not_found(client, project, reviewer, other_project):
    client.force_login(reviewer)
    other = Item.objects.get(project=other_project)
    assert client.get(f"/projects/{project.pk}/data/items/{other.pk}/").status_code == 404
    assert client.get(f"/api/projects/{project.pk}/data/items/{other.pk}/").status_code == 404
