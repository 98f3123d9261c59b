"""The data browser's query (`annotations.browse`): every filter and sort against a Python
reference on a seeded project, keyset paging without gaps or repeats, and bad input refused
with the parameter named."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext

from annotations.browse import (
    COUNT_BOUND,
    SORTS,
    BrowseQuery,
    BrowseQueryError,
    annotators_of,
    browse_page,
    count_matching,
    encode_cursor,
    items_matching,
    parse_limit,
)
from annotations.models import Membership
from tests.browse_seed import CLASSES, reference_filter, reference_order, seed_project

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]


@pytest.fixture
def seeded(db):
    return seed_project()


def query(project, **params) -> BrowseQuery:
    return BrowseQuery.from_querydict(project, QueryDict(mutable=True) | params)


def matching_ids(project, **params) -> set[int]:
    return set(items_matching(project, query(project, **params)).values_list("pk", flat=True))


def all_pages(project, q: BrowseQuery, limit: int) -> list[int]:
    ids, after, pages = [], None, 0
    while True:
        page = browse_page(project, q, after=after, limit=limit)
        assert len(page.rows) <= limit
        ids += [row.item.pk for row in page.rows]
        pages += 1
        assert pages < 1000, "paging does not end"
        if page.next_cursor is None:
            return ids
        assert page.rows, "an empty page with a next cursor"
        after = page.next_cursor


FILTERS = [
    {"status": "open"},
    {"status": "in_progress"},
    {"status": "partly"},
    {"status": "complete"},
    {"status": "review"},
    {"status": "decided"},
    {"gold": "positive"},
    {"gold": "neutral"},
    {"gold_source": "tie"},
    {"gold_source": "majority"},
    {"annotator": "browse-ann1"},
    {"predicted": "negative"},
    {"disagrees": "1"},
    {"flag": "flagged"},
    {"flag": "dismissed"},
    {"confidence_min": "0.6"},
    {"confidence_max": "0.5"},
    {"confidence_min": "0.5", "confidence_max": "0.7"},
    {"agreement_max": "0.5"},
    {"agreement_min": "1"},
    {"error_min": "0.5"},
    {"error_min": "0.2", "error_max": "0.4"},
    {"outlier_min": "1.5"},
    {"outlier_max": "0.3"},
    {"duplicates": "1"},
    {"meta": "colour=red"},
    {"meta": "size=2"},
    {"meta": "lang=en"},
    {"q": "alpha"},
    {"q": "beta gamma"},
    {"q": "n7"},
]


@pytest.mark.parametrize(
    "params", FILTERS, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items())
)
def test_each_filter_matches_the_python_reference(seeded, params):
    expected = {s.pk for s in reference_filter(seeded.items, params)}
    assert matching_ids(seeded.project, **params) == expected
    assert expected, f"the seed has no item for {params}: the test would prove nothing"


def test_a_duplicate_group_filter_lists_that_group_only(seeded):
    for group in seeded.groups:
        expected = {s.pk for s in seeded.items if s.group == group}
        assert matching_ids(seeded.project, group=str(group)) == expected


COMBINED = [
    {"status": "complete", "gold": "positive"},
    {"predicted": "positive", "confidence_min": "0.6", "meta": "colour=blue"},
    {"disagrees": "1", "error_min": "0.3"},
    {"q": "alpha", "status": "open"},
    {"annotator": "browse-ann0", "duplicates": "1"},
]


@pytest.mark.parametrize("params", COMBINED, ids=lambda p: "&".join(p))
def test_filters_combine_so_that_all_must_hold(seeded, params):
    expected = {s.pk for s in reference_filter(seeded.items, params)}
    assert matching_ids(seeded.project, **params) == expected


def test_two_metadata_filters_must_both_hold(seeded):
    q = QueryDict("meta=colour%3Dred&meta=size%3D1")
    found = set(items_matching(seeded.project, BrowseQuery.from_querydict(seeded.project, q)))
    expected = {
        s.pk for s in seeded.items if s.metadata["colour"] == "red" and s.metadata["size"] == 1
    }
    assert {i.pk for i in found} == expected


SORT_KEYS = [s for key in SORTS for s in (key, f"-{key}")]


@pytest.mark.parametrize("sort", SORT_KEYS)
@pytest.mark.parametrize("limit", [1, 7, 500])
def test_keyset_pages_cover_every_item_once_in_reference_order(seeded, sort, limit):
    q = query(seeded.project, sort=sort)
    assert all_pages(seeded.project, q, limit) == reference_order(seeded.items, sort)


@pytest.mark.parametrize("sort", ["-error", "confidence", "-agreement", "outlier", "-answers"])
def test_a_filtered_sort_pages_in_reference_order(seeded, sort):
    params = {"status": "complete"} if "error" not in sort else {"confidence_min": "0.5"}
    q = query(seeded.project, sort=sort, **params)
    expected = reference_order(reference_filter(seeded.items, params), sort)
    assert all_pages(seeded.project, q, 4) == expected


def test_a_page_costs_a_fixed_number_of_queries(seeded):
    q = query(seeded.project, sort="-error", cols="colour,size")
    with CaptureQueriesContext(connection) as small:
        browse_page(seeded.project, q, limit=5)
    with CaptureQueriesContext(connection) as large:
        browse_page(seeded.project, q, limit=60)
    # The ids (one query for the rows with a score, one more when the page reaches the rows
    # without), then the rows, one query per related table and the leases: never one per row.
    assert len(small) <= 10
    assert len(large) <= 10


def test_rows_carry_status_columns_and_a_short_excerpt(seeded):
    project = seeded.project
    by_pk = {s.pk: s for s in seeded.items}
    page = browse_page(project, query(project, cols="colour,lang"), limit=500)
    for row in page.rows:
        s = by_pk[row.item.pk]
        assert row.status == s.status
        assert row.columns == [s.metadata["colour"], s.metadata.get("lang")]
        assert row.excerpt == s.text
        prediction = row.prediction()
        assert (prediction.confidence if prediction else None) == s.confidence
        issue = row.label_issue()
        assert (issue.score if issue else None) == s.error
        duplicate = row.duplicate()
        assert (duplicate.group_id if duplicate else None) == s.group


def test_the_query_string_holds_only_what_differs_from_the_defaults(seeded):
    project = seeded.project
    assert query(project).to_querystring() == ""
    q = query(project, status="open", gold="positive", confidence_min="0.25", sort="-error")
    assert q.to_querystring() == "status=open&gold=positive&confidence_min=0.25&sort=-error"
    again = BrowseQuery.from_querydict(project, QueryDict(q.to_querystring()))
    assert again == q
    assert again.to_querystring() == q.to_querystring()


def test_a_query_survives_the_round_trip_through_its_query_string(seeded):
    project = seeded.project
    raw = "q=alpha+beta&meta=colour%3Dred&meta=size%3D2&disagrees=1&cols=colour,size&sort=outlier"
    q = BrowseQuery.from_querydict(project, QueryDict(raw))
    assert q.meta == [("colour", "red"), ("size", "2")]
    assert q.cols == ["colour", "size"]
    assert BrowseQuery.from_querydict(project, QueryDict(q.to_querystring())) == q
    assert q.is_filtered
    assert not query(project, sort="-error", cols="colour").is_filtered


BAD = [
    ({"status": "lost"}, "status"),
    ({"gold": "nonsense"}, "gold"),
    ({"predicted": "nonsense"}, "predicted"),
    ({"gold_source": "oracle"}, "gold_source"),
    ({"annotator": "nobody"}, "annotator"),
    ({"flag": "maybe"}, "flag"),
    ({"confidence_min": "high"}, "confidence_min"),
    ({"agreement_max": "nan"}, "agreement_max"),
    ({"error_min": "inf"}, "error_min"),
    ({"outlier_min": "2", "outlier_max": "1"}, "outlier_min"),
    ({"disagrees": "perhaps"}, "disagrees"),
    ({"group": "one"}, "group"),
    ({"group": "-3"}, "group"),
    ({"meta": "colour"}, "meta"),
    ({"meta": "=red"}, "meta"),
    ({"sort": "-name"}, "sort"),
    ({"q": "x" * 201}, "q"),
    ({"q": "a\x00b"}, "q"),
    ({"cols": ",".join(f"c{i}" for i in range(11))}, "cols"),
]


@pytest.mark.parametrize(("params", "field"), BAD, ids=[f for _, f in BAD])
def test_bad_input_is_refused_naming_the_parameter(seeded, params, field):
    with pytest.raises(BrowseQueryError) as caught:
        query(seeded.project, **params)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize("cursor", ["garbage!", "bm90IGpzb24", encode_cursor("id", False, 1, -5)])
def test_a_cursor_not_made_here_is_refused(seeded, cursor):
    with pytest.raises(BrowseQueryError) as caught:
        browse_page(seeded.project, query(seeded.project), after=cursor)
    assert caught.value.field == "after"


def test_a_cursor_of_another_sort_order_is_refused(seeded):
    project = seeded.project
    first = browse_page(project, query(project, sort="-error"), limit=3)
    with pytest.raises(BrowseQueryError, match="another sort order"):
        browse_page(project, query(project, sort="error"), after=first.next_cursor)


@pytest.mark.parametrize("value", ["0", "501", "ten"])
def test_a_page_size_out_of_range_is_refused(value):
    with pytest.raises(BrowseQueryError) as caught:
        parse_limit(value)
    assert caught.value.field == "limit"


def test_the_count_is_exact_below_the_bound_and_says_so_above_it(seeded):
    project = seeded.project
    assert count_matching(project, query(project)) == (len(seeded.items), True)
    complete = len(reference_filter(seeded.items, {"status": "complete"}))
    assert count_matching(project, query(project, status="complete")) == (complete, True)
    assert count_matching(project, query(project, confidence_min="0"), bound=5) == (5, False)
    assert COUNT_BOUND >= 1000


def test_the_annotator_choices_are_everyone_who_answered_here_including_who_left(seeded):
    project = seeded.project
    other = seed_project(10, seed=3, name="Elsewhere")  # its annotators answered there only
    answered = set(project.annotations.values_list("annotator__username", flat=True))
    assert len(answered) >= 2
    first = min(seeded.annotators, key=lambda u: u.pk)
    Membership.objects.filter(project=project, user=first).delete()  # left: still listed
    assert annotators_of(project) == sorted(answered)
    assert first.username in annotators_of(project)
    assert set(annotators_of(other.project)).isdisjoint(answered)
    assert annotators_of(seed_project(0, name="Empty").project) == []


def test_a_class_name_is_matched_exactly_not_as_a_part(db):
    seeded = seed_project(20, name="Parts")
    assert "positive" in CLASSES
    got = matching_ids(seeded.project, gold="positive")
    assert got == {s.pk for s in seeded.items if s.gold == ["positive"]}


# --- The pages --------------------------------------------------------------------------------


@pytest.fixture
def browsing(seeded, client):
    """The seeded project with a reviewer logged in."""
    from annotations.models import Membership
    from tests.conftest import make_user

    rita = make_user("rita")
    Membership.objects.create(project=seeded.project, user=rita, role=Membership.Role.REVIEWER)
    client.force_login(rita)
    return seeded


def data_url(project, qs: str = "") -> str:
    return f"/projects/{project.pk}/data/" + (f"?{qs}" if qs else "")


def test_the_page_lists_the_filtered_items_with_a_bulk_form(browsing, client):
    project = browsing.project
    response = client.get(data_url(project, "status=complete&sort=-error"))
    assert response.status_code == 200
    html = response.content.decode()
    expected = reference_order(reference_filter(browsing.items, {"status": "complete"}), "-error")
    shown = [int(pk) for pk in re.findall(r'name="item" value="(\d+)"', html)]
    assert shown == expected[:50]
    assert 'id="bulk-form"' in html
    assert 'name="filter" value="status=complete&amp;sort=-error"' in html
    assert 'name="all_matching" value="1"' in html
    # The count comes with a request of its own, which also updates the bulk bar's label.
    assert "items match" not in html
    count_url = re.search(r'id="browse-count" hx-get="([^"]+)" hx-trigger="load"', html).group(1)
    counted = client.get(count_url.replace("&amp;", "&"), HTTP_HX_REQUEST="true")
    assert counted.status_code == 200
    fragment = counted.content.decode()
    assert f'id="browse-count" aria-live="polite">{len(expected)} items match' in fragment
    assert (
        f'<span id="all-matching-count" hx-swap-oob="true">{len(expected)} matching items</span>'
        in fragment
    )


def test_a_filtered_page_leaves_the_count_to_its_own_request(browsing, client):
    with CaptureQueriesContext(connection) as page:
        client.get(data_url(browsing.project, "status=complete"))
    assert not [q for q in page.captured_queries if q["sql"].startswith("SELECT COUNT(*) FROM")]
    with CaptureQueriesContext(connection) as counted:
        client.get(f"/projects/{browsing.project.pk}/data/count/?status=complete")
    assert [q for q in counted.captured_queries if q["sql"].startswith("SELECT COUNT(*) FROM")]


def test_an_unfiltered_page_shows_the_project_count_at_once(browsing, client):
    html = client.get(data_url(browsing.project, "sort=-outlier")).content.decode()
    assert f"{len(browsing.items)} items match" in html
    assert "/data/count/" not in html
    assert f'Select all <span id="all-matching-count">{len(browsing.items)} matching' in html


def test_the_count_has_a_page_of_its_own_without_javascript(browsing, client):
    project = browsing.project
    expected = reference_filter(browsing.items, {"status": "complete"})
    response = client.get(f"/projects/{project.pk}/data/count/?status=complete&sort=-error")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" in html
    assert f"{len(expected)} items match" in html
    assert f'href="/projects/{project.pk}/data/?status=complete&amp;sort=-error"' in html


def test_a_bad_filter_on_the_count_answers_400_naming_it(browsing, client):
    url = f"/projects/{browsing.project.pk}/data/count/?confidence_min=lots"
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "confidence_min: &#x27;lots&#x27; is not a number." in response.content.decode()


def test_htmx_gets_only_the_results_and_every_htmx_link_has_an_href(browsing, client):
    response = client.get(data_url(browsing.project, "sort=confidence"), HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "<html" not in html and 'id="browse-table"' in html
    for tag in re.findall(r"<a [^>]*hx-get=[^>]*>", html):
        assert " href=" in tag, tag


def test_a_bad_filter_shows_what_is_wrong_and_answers_400(browsing, client):
    response = client.get(data_url(browsing.project, "confidence_min=lots"))
    assert response.status_code == 400
    assert "confidence_min: &#x27;lots&#x27; is not a number." in response.content.decode()
    response = client.get(data_url(browsing.project, "after=nonsense"))
    assert response.status_code == 400
    assert "after: not a cursor" in response.content.decode()


def test_the_next_page_link_continues_where_the_page_ended(browsing, client):
    html = client.get(data_url(browsing.project, "sort=-outlier&limit=10")).content.decode()
    next_url = re.search(r'id="next-page" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    second = client.get(next_url + "&limit=10").content.decode()
    ids = [int(x) for x in re.findall(r'name="item" value="(\d+)"', html + second)]
    assert ids == reference_order(browsing.items, "-outlier")[:20]


def test_user_text_is_shown_as_text_on_the_list_and_the_item_page(browsing, client):
    from annotations.models import Item

    project = browsing.project
    item = Item.objects.create(
        project=project,
        external_id="<b>x</b>",
        text="<script>alert(1)</script> hello",
        metadata={"colour": "<img src=x onerror=alert(1)>"},
    )
    html = client.get(data_url(project, "q=hello&cols=colour")).content.decode()
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert "<img src=x" not in html and "<b>x</b>" not in html
    page = client.get(f"/projects/{project.pk}/data/items/{item.pk}/").content.decode()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x" not in page


@pytest.mark.parametrize(("who", "status"), [("annotator", 403), ("outsider", 404)])
def test_annotators_and_outsiders_cannot_browse(
    seeded, client, project, other_project, annotator, outsider, who, status
):
    from annotations.models import Membership

    Membership.objects.create(project=seeded.project, user=annotator, role="annotator")
    client.force_login(annotator if who == "annotator" else outsider)
    item = seeded.items[0].pk
    for url in (
        data_url(seeded.project),
        f"/projects/{seeded.project.pk}/data/items/{item}/",
        f"/projects/{seeded.project.pk}/data/count/?status=open",
        f"/api/projects/{seeded.project.pk}/data/",
        f"/api/projects/{seeded.project.pk}/data/items/{item}/",
    ):
        assert client.get(url).status_code == status, url
