"""Who may run the data analyses and act on likely label errors, on the pages and the API:
outsiders get 404, annotators 403, reviewers run analyses and see the flags, project admins
also send them to review; POSTs need the CSRF token."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from annotations.models import Review
from benchmarks.label_errors import label_items
from curation.jobs import analysis_run_inline
from curation.models import AnalysisRun, LabelIssue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("data_dir")]


@pytest.fixture(autouse=True)
def no_channel_layer(settings):
    settings.CHANNEL_LAYERS = {}


@pytest.fixture
def scored(project):
    """The cast's project with every item labelled (7/7/6) and its label errors scored."""
    items = list(project.items.order_by("id"))
    classes = ["positive", "negative", "neutral"]
    label_items(project, {item.pk: classes[n % 3] for n, item in enumerate(items)})
    run = analysis_run_inline(project, AnalysisRun.Kind.LABEL_ERRORS)
    assert run.status == AnalysisRun.Status.DONE, run.error
    if not LabelIssue.objects.filter(status=LabelIssue.Status.FLAGGED).exists():
        # Arbitrary labels on look-alike texts: cleanlab may flag none; flag the worst one
        # so the actions have something to act on.
        worst = LabelIssue.objects.order_by("-score").first()
        LabelIssue.objects.filter(pk=worst.pk).update(status=LabelIssue.Status.FLAGGED)
    return project


def api_urls(project) -> list[tuple[str, str]]:
    item = project.items.order_by("id").first()
    base = f"/api/projects/{project.pk}"
    return [
        ("get", f"{base}/analyses/"),
        ("post", f"{base}/analyses/label_errors/"),
        ("get", f"{base}/label-errors/"),
        ("post", f"{base}/label-errors/review/"),
        ("post", f"{base}/items/{item.pk}/label-issue/dismiss/"),
    ]


def page_urls(project) -> list[tuple[str, str]]:
    item = project.items.order_by("id").first()
    base = f"/projects/{project.pk}"
    return [
        ("get", f"{base}/data/analyses/"),
        ("post", f"{base}/data/analyses/label_errors/"),
        ("post", f"{base}/data/label-errors/review/"),
        ("post", f"{base}/items/{item.pk}/label-issue/dismiss/"),
    ]


def call(client, method: str, url: str, **data):
    return (
        getattr(client, method)(url, data or {"limit": 1}, format="json")
        if isinstance(client, APIClient)
        else getattr(client, method)(url, data or {"limit": 1})
    )


def test_outsiders_get_404_everywhere_and_annotators_403(scored, outsider, annotator):
    for user, code in ((outsider, 404), (annotator, 403)):
        api = APIClient()
        api.force_authenticate(user)
        for method, url in api_urls(scored):
            assert call(api, method, url).status_code == code, (user, url)
        web = Client()
        web.force_login(user)
        for method, url in page_urls(scored):
            assert call(web, method, url).status_code == code, (user, url)
    assert not AnalysisRun.objects.filter(status="queued").exists()
    assert not Review.objects.exists()


def test_anonymous_visitors_are_refused(scored):
    for method, url in api_urls(scored):
        assert call(APIClient(), method, url).status_code in (401, 403)
    for method, url in page_urls(scored):
        response = call(Client(), method, url)
        assert response.status_code == 302 and "/login" in response["Location"]


def test_a_reviewer_asks_for_a_run_over_the_api_and_sees_the_latest_runs(scored, reviewer):
    api = APIClient()
    api.force_authenticate(reviewer)
    response = api.post(f"/api/projects/{scored.pk}/analyses/predictions/")
    assert response.status_code == 202
    body = response.json()
    assert body["kind"] == "predictions" and body["status"] == "queued"
    assert body["requested_by"] == "rev"
    again = api.post(f"/api/projects/{scored.pk}/analyses/predictions/").json()
    assert again["id"] == body["id"]
    runs = api.get(f"/api/projects/{scored.pk}/analyses/").json()
    assert runs["predictions"]["id"] == body["id"]
    assert runs["label_errors"]["status"] == "done"
    bad = api.post(f"/api/projects/{scored.pk}/analyses/sorcery/")
    assert bad.status_code == 400 and "sorcery" in bad.json()["kind"]


def test_the_label_error_list_filters_by_score_and_status_most_likely_first(scored, reviewer):
    api = APIClient()
    api.force_authenticate(reviewer)
    url = f"/api/projects/{scored.pk}/label-errors/"
    rows = api.get(url, {"page_size": 100}).json()["results"]
    assert len(rows) == 20
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    cut = rows[5]["score"]
    above = api.get(url, {"min_score": cut, "page_size": 100}).json()["results"]
    assert {r["item"] for r in above} == {r["item"] for r in rows if r["score"] >= cut}
    flagged = api.get(url, {"status": "flagged"}).json()["results"]
    assert flagged and all(r["status"] == "flagged" for r in flagged)
    first = api.get(url, {"page_size": 7}).json()
    second = api.get(first["next"]).json()
    assert [r["item"] for r in first["results"] + second["results"]] == [
        r["item"] for r in rows[:14]
    ]
    assert api.get(url, {"status": "sorcery"}).status_code == 400
    assert api.get(url, {"min_score": "high"}).status_code == 400


def test_only_project_admins_send_label_errors_to_review(scored, reviewer, project_admin):
    api = APIClient()
    url = f"/api/projects/{scored.pk}/label-errors/review/"
    api.force_authenticate(reviewer)
    assert api.post(url, {"limit": 1}, format="json").status_code == 403
    api.force_authenticate(project_admin)
    assert api.post(url, {"limit": 0}, format="json").status_code == 400
    top = LabelIssue.objects.filter(status="flagged").order_by("-score", "item_id").first()
    body = api.post(url, {"limit": 1}, format="json").json()
    assert body == {"sent": 1, "external_ids": [top.item.external_id]}
    assert Review.objects.get(item_id=top.item_id).reasons == [Review.Reason.LABEL_ERROR]


def test_a_reviewer_dismisses_a_flag_as_label_is_right(scored, reviewer):
    api = APIClient()
    api.force_authenticate(reviewer)
    issue = LabelIssue.objects.filter(status="flagged").first()
    response = api.post(f"/api/projects/{scored.pk}/items/{issue.item_id}/label-issue/dismiss/")
    assert response.status_code == 200 and response.json()["status"] == "dismissed"
    issue.refresh_from_db()
    assert issue.status == LabelIssue.Status.DISMISSED and issue.closed_by == reviewer


def test_the_page_queues_a_run_with_htmx_and_needs_the_csrf_token(scored, reviewer):
    web = Client(enforce_csrf_checks=True)
    web.force_login(reviewer)
    url = f"/projects/{scored.pk}/data/analyses/predictions/"
    assert web.post(url).status_code == 403
    assert not AnalysisRun.objects.filter(kind="predictions").exists()
    page = web.get(f"/projects/{scored.pk}/data/analyses/")
    assert page.status_code == 200
    token = page.cookies["csrftoken"].value
    response = web.post(url, HTTP_HX_REQUEST="true", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="analysis-runs"' in html and "Model predictions" in html and "Queued" in html
    assert "Send to review" not in html  # reviewers do not send the top N
    assert AnalysisRun.objects.get(kind="predictions").requested_by == reviewer
    assert web.post(f"/projects/{scored.pk}/data/analyses/sorcery/",
                    HTTP_X_CSRFTOKEN=token).status_code == 404  # fmt: skip


def test_the_analyses_page_loads_its_script_and_no_inline_one(scored, project_admin):
    web = Client()
    web.force_login(project_admin)
    html = web.get(f"/projects/{scored.pk}/data/analyses/").content.decode()
    assert "js/analyses.js" in html
    assert "<script>" not in html
    assert "Send to review" in html


def test_the_reviewer_page_shows_a_likely_label_error_with_its_suggestion(
    scored, reviewer, project_admin
):
    from curation.label_issues import label_errors_to_review

    [item_id] = label_errors_to_review(project=scored, user=project_admin, limit=1)
    issue = LabelIssue.objects.get(pk=item_id)
    web = Client()
    web.force_login(reviewer)
    html = web.get(f"/projects/{scored.pk}/review/").content.decode()
    assert "likely label error" in html
    assert "the model suggests" in html and issue.suggested in html
    assert "never saw this item" in html


def test_the_data_page_hosts_the_analyses_panel_and_the_item_page_dismisses_a_flag(
    scored, reviewer
):
    web = Client()
    web.force_login(reviewer)
    html = web.get(f"/projects/{scored.pk}/data/").content.decode()
    assert 'id="analysis-runs"' in html and "js/analyses.js" in html
    issue = LabelIssue.objects.filter(status="flagged").first()
    item_url = f"/projects/{scored.pk}/data/items/{issue.item_id}/"
    assert "Dismiss: label is right" in web.get(item_url).content.decode()
    response = web.post(f"/projects/{scored.pk}/items/{issue.item_id}/label-issue/dismiss/")
    assert response.status_code == 302 and response["Location"] == item_url
    issue.refresh_from_db()
    assert issue.status == LabelIssue.Status.DISMISSED
    assert "Dismiss: label is right" not in web.get(item_url).content.decode()
