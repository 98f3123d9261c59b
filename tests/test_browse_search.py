"""The data browser's text search on PostgreSQL: the stored `text_vector` (migration 0012) kept
in step with the text on import and on edit, rare and common searches read in two ways that
find the same items, and a search that still holds when a bulk action uses the matches as a
subquery."""

from __future__ import annotations

import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations import bulk
from annotations.browse import BrowseQuery, count_matching, items_matching
from annotations.browse import query as browse_query
from annotations.bulk import Selection
from annotations.imports import import_file
from annotations.models import DeletedItem, Item
from annotations.services import project_create
from tests.conftest import add_text_items, make_user

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords", "media_root")]

TEXTS = [
    "the battery died after a week",
    "refund please, the battery is broken",
    "great screen and a good battery",
    "the refund never came",
    "the warranty covered the screen",
    "nothing to say",
]
#: Searches and the texts (indexes into TEXTS) they match, as `websearch_to_tsquery` reads them.
SEARCHES = {
    "battery": {0, 1, 2},
    "Battery refund": {1},
    "the -battery": {3, 4},
    "-battery": {3, 4, 5},
    '"the battery"': {0, 1},
    "refund or warranty": {1, 3, 4},
    "absent": set(),
    "!!!": set(),
}


@pytest.fixture
def project(db):
    project = project_create(name="Search", classes=["positive", "negative"])
    add_text_items(project, TEXTS, prefix="s")
    return project


def found(project, q: str) -> set[str]:
    matches = items_matching(project, BrowseQuery(q=q)).values_list("external_id", flat=True)
    return set(matches)


def stored_vectors_out_of_step(project) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM annotations_item WHERE project_id = %s "
            "AND text_vector IS DISTINCT FROM to_tsvector('simple'::regconfig, text)",
            [project.pk],
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize("few", [browse_query.FEW_TEXT_MATCHES, 1])
def test_rare_and_common_searches_find_the_same_items(project, monkeypatch, few):
    """With the default bound every search here is rare (gathered from the GIN index); with a
    bound of 1 every search that matches is common (checked item by item on a walk)."""
    monkeypatch.setattr(browse_query, "FEW_TEXT_MATCHES", few)
    for q, expected in SEARCHES.items():
        with CaptureQueriesContext(connection) as queries:
            assert found(project, q) == {f"s{i}" for i in expected}, q
        gathered = any("= ANY(ARRAY(SELECT found.id" in x["sql"] for x in queries)
        assert gathered == (len(expected) < few and not q.startswith("-")), q
        assert count_matching(project, BrowseQuery(q=q)) == (len(expected), True)


def test_a_word_the_statistics_list_is_left_to_the_planner(project):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE annotations_item")
    with CaptureQueriesContext(connection) as common:
        assert found(project, "the") == {"s0", "s1", "s3", "s4"}
    with CaptureQueriesContext(connection) as rare:
        assert found(project, "zebra") == set()
    probe = "SELECT count(*) FROM (SELECT 1 FROM"
    assert not any(x["sql"].startswith(probe) for x in common)
    assert any(x["sql"].startswith(probe) for x in rare)


def test_the_probe_leaves_the_planner_settings_as_they_were(project):
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        assert found(project, "warranty") == {"s4"}
        cursor.execute("SHOW enable_seqscan")
        assert cursor.fetchone() == ("on",)


def test_imported_items_are_found_by_their_words(project):
    lines = b'{"id": "w1", "text": "The guarantee ran out"}\n{"id": "w2", "text": "Fine."}\n'
    import_file(project=project, fileobj=io.BytesIO(lines), filename="more.jsonl", id_field="id")
    assert found(project, "guarantee") == {"w1"}
    assert found(project, "fine") == {"w2"}
    assert stored_vectors_out_of_step(project) == 0


def test_an_edited_text_is_found_by_its_new_words_only(project, superuser, client):
    item = Item.objects.get(project=project, external_id="s4")
    client.force_login(superuser)
    response = client.post(
        f"/admin/annotations/item/{item.pk}/change/",
        {"external_id": item.external_id, "text": "a loud fan", "metadata": "{}", "priority": 1},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Item.objects.get(pk=item.pk).text == "a loud fan"
    assert found(project, "fan") == {"s4"}
    assert found(project, "warranty") == set()
    assert stored_vectors_out_of_step(project) == 0


def test_deleting_every_item_a_search_matches_records_each(project):
    """The delete action reads the matches as a subquery (`item_id IN (…)`), where the items
    table has another alias: the search must name its column through that alias."""
    result = bulk.items_delete_recorded(
        project=project, user=make_user("padmin"), selection=Selection.matching("q=battery")
    )
    assert result.done == 3
    assert set(DeletedItem.objects.values_list("external_id", flat=True)) == {"s0", "s1", "s2"}
    assert found(project, "battery") == set()
