"""The project dashboard: its numbers against a reference computed in Python from the raw rows
of a seeded project (answers stamped at chosen times), the incremental refresh, the page for an
empty and a busy project, the annotator's own page, the API, and the worker's job."""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotations.models import Annotation, Item, Membership, Project, Review
from annotations.review import review_decide, review_flag
from annotations.services import project_create, project_set_overlap
from curation import jobs
from curation.accuracy import wilson_interval
from curation.dashboard import (
    PLOTS,
    dashboard_data,
    dashboard_due,
    dashboard_refresh,
    projects_dashboard_due,
)
from curation.dataset_versions import final_gold_count
from curation.models import (
    AnnotatorHour,
    DashboardState,
    ModelVersion,
    ProjectStatsPoint,
    ProjectTraining,
)
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords", "data_dir")

CLASSES = ["positive", "negative", "neutral"]
POS, NEG, NEU = ([c] for c in CLASSES)
SKIP = None
#: (item index, annotator, labels or SKIP, hours before now the answer was given)
ANSWERS = [
    (0, "ann-a", POS, 0.1), (0, "ann-b", POS, 0.2),  # unanimous
    (1, "ann-a", NEG, 1.0), (1, "ann-c", NEG, 2.0),
    (2, "ann-b", NEU, 3.0), (2, "ann-c", NEU, 5.0),
    (3, "ann-a", POS, 30.0), (3, "ann-b", NEG, 30.2),  # a tie, decided by a reviewer
    (4, "ann-a", POS, 50.0), (4, "ann-c", POS, 60.0),  # before the last 48 hours
    (5, "ann-b", NEG, 200.0), (5, "ann-c", NEG, 200.5),  # eight days ago
    (6, "ann-a", NEU, 400.0), (6, "ann-b", NEU, 401.0),  # before the last 14 days
    (7, "ann-c", POS, 0.5), (7, "ann-a", NEG, 0.6),  # a tie, left in review
    (8, "ann-a", POS, 0.3),  # in progress
    (9, "ann-b", NEG, 4.0),
    (10, "ann-c", NEU, 26.0),
    (11, "ann-a", SKIP, 0.4),  # skipped: still open
    (12, "ann-b", SKIP, 1.0), (12, "ann-c", POS, 1.1),
    (13, "ann-a", NEG, 2.0),  # in progress, flagged and decided by a reviewer
]  # fmt: skip
OVERLAP = 2


def hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def answer(project: Project, item: Item, user, labels, hours_ago: float, now: datetime) -> None:
    result = submit_handed_out(
        item=item,
        annotator=user,
        labels=labels or [],
        skipped=labels is None,
        client_uuid=uuid.uuid4(),
    )
    stamped = now - timedelta(hours=hours_ago)
    Annotation.objects.filter(pk=result.annotation.pk).update(created_at=stamped)


@pytest.fixture
def team(project) -> dict:
    return {
        name: _member(project, name, Membership.Role.ANNOTATOR)
        for name in ("ann-a", "ann-b", "ann-c")
    }


def _member(project: Project, name: str, role: str):
    user = make_user(name)
    Membership.objects.create(project=project, user=user, role=role)
    return user


@pytest.fixture
def seeded(project, team, reviewer) -> Project:
    """The project's 20 items, 2 answers wanted each, answered as in ANSWERS, with two reviewer
    decisions (a tie, and an item that is not complete yet)."""
    project = project_set_overlap(project, OVERLAP)
    items = list(Item.objects.filter(project=project).order_by("id"))
    now = timezone.now()
    for index, name, labels, hours_ago in ANSWERS:
        answer(project, items[index], team[name], labels, hours_ago, now)
    tie = Review.objects.get(item=items[3])
    review_decide(project=project, review_id=tie.pk, reviewer=reviewer, labels=POS)
    flagged = review_flag(item=items[13], user=reviewer, note="looks off")
    review_decide(project=project, review_id=flagged.pk, reviewer=reviewer, labels=NEU)
    project.refresh_from_db()
    return project


# --- The reference: the same numbers from the raw rows ------------------------------------------


def reference(project: Project, as_of: datetime) -> dict:
    anchor = hour(as_of)
    rows = list(
        Annotation.objects.filter(project=project).values_list(
            "item_id", "annotator__username", "labels", "skipped", "created_at"
        )
    )
    items = dict(Item.objects.filter(project=project).values_list("pk", "needs_annotation"))
    decided = dict(
        Review.objects.filter(project=project, status=Review.Status.DECIDED).values_list(
            "item_id", "labels"
        )
    )
    answers = defaultdict(list)
    hourly, daily = defaultdict(lambda: [0, 0]), defaultdict(lambda: [0, 0])
    first_day = anchor.date() - timedelta(days=13)
    for item_id, name, labels, skipped, created in rows:
        if not skipped:
            answers[item_id].append(labels[0])
        slot = hour(created)
        if anchor - timedelta(hours=48) < slot <= anchor:
            hourly[(slot, name)][skipped] += 1
        if first_day <= slot.date() <= anchor.date():
            daily[(slot.date(), name)][skipped] += 1
    gold, agreements = Counter(), []
    for item_id, needs_answers in items.items():
        votes = Counter(answers[item_id]).most_common()
        majority = None
        if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]):
            majority = votes[0][0]
        if not needs_answers and votes:
            agreements.append(votes[0][1] / len(answers[item_id]))
        final = decided.get(item_id) or ([majority] if majority and not needs_answers else None)
        for name in final or []:
            gold[name] += 1
    unfinished = [pk for pk, needs in items.items() if needs]
    in_progress = sum(1 for pk in unfinished if answers[pk])
    remaining = sum(OVERLAP - len(answers[pk]) for pk in unfinished)
    per_hour = Counter()
    for (slot, _), (done, _) in hourly.items():
        if slot > anchor - timedelta(hours=24):
            per_hour[slot] += done
    active = [n for n in per_hour.values() if n]
    pace = sum(active) / len(active) if active else None
    return {
        "items": len(items),
        "complete": len(items) - len(unfinished),
        "in_progress": in_progress,
        "open": len(unfinished) - in_progress,
        "answers": len(rows),
        "answers_remaining": remaining,
        "hourly": {(k[0].isoformat(), k[1]): tuple(v) for k, v in hourly.items()},
        "daily": {(k[0].isoformat(), k[1]): tuple(v) for k, v in daily.items()},
        "gold": dict(gold),
        "agreement": sum(agreements) / len(agreements),
        "pace": pace,
        "active_hours": len(active),
        "eta_hours": remaining / pace if pace else None,
        "open_reviews": Review.objects.filter(project=project, status="open").count(),
    }


def by_slot(rows: list[dict], slot: str) -> dict:
    return {(row[slot], row["annotator"]): (row["answers"], row["skips"]) for row in rows}


def as_of(project: Project) -> datetime:
    return DashboardState.objects.get(project=project).refreshed_at


# --- The numbers ------------------------------------------------------------------------------


def test_every_number_matches_a_python_reference_from_the_raw_rows(seeded):
    dashboard_refresh(seeded)
    data = dashboard_data(seeded)
    ref = reference(seeded, as_of(seeded))

    assert data["ready"] and data["refreshed_at"] == as_of(seeded).isoformat()
    progress = data["progress"]
    for key in ("items", "complete", "in_progress", "open", "answers", "answers_remaining"):
        assert progress[key] == ref[key], key
    assert (progress["complete"], progress["in_progress"], progress["open"]) == (8, 5, 7)
    assert by_slot(data["throughput"]["hourly"], "hour") == ref["hourly"]
    assert by_slot(data["throughput"]["daily"], "day") == ref["daily"]
    assert len(ref["hourly"]) > 5 and len(ref["daily"]) > 3  # the windows cut some answers off
    gold = data["gold"]["over_time"][-1]
    assert gold["counts"] == {name: ref["gold"].get(name, 0) for name in CLASSES}
    assert gold["total"] == sum(ref["gold"].values()) == final_gold_count(seeded)
    assert data["agreement"][-1]["mean"] == pytest.approx(ref["agreement"])
    assert data["eta"]["pace_per_hour"] == pytest.approx(ref["pace"])
    assert data["eta"]["active_hours"] == ref["active_hours"]
    assert data["eta"]["hours"] == pytest.approx(ref["eta_hours"])
    assert data["eta"]["state"] == "estimated"
    finish = datetime.fromisoformat(data["eta"]["finish_at"])
    assert finish == as_of(seeded) + timedelta(hours=ref["eta_hours"])
    assert data["reviews"]["open"] == ref["open_reviews"] == 1


def test_each_annotators_totals_and_means_per_active_hour_and_day_match_the_reference(seeded):
    dashboard_refresh(seeded)
    data = dashboard_data(seeded)
    ref = reference(seeded, as_of(seeded))
    for person in data["throughput"]["annotators"]:
        name = person["username"]
        hours = [v for (_, who), v in ref["hourly"].items() if who == name]
        days = [v for (_, who), v in ref["daily"].items() if who == name]
        assert person["answers_hours"] == sum(done for done, _ in hours), name
        assert person["active_hours"] == sum(1 for done, _ in hours if done), name
        assert person["answers_days"] == sum(done for done, _ in days), name
        assert person["skips_days"] == sum(skips for _, skips in days), name
        active_days = sum(1 for done, _ in days if done)
        assert person["per_day"] == pytest.approx(person["answers_days"] / active_days), name
    order = [p["answers_days"] for p in data["throughput"]["annotators"]]
    assert order == sorted(order, reverse=True)


def test_answers_after_a_refresh_are_counted_once_and_earlier_hours_are_kept(
    project, team, settings
):
    project = project_set_overlap(project, 1)
    items = list(Item.objects.filter(project=project).order_by("id"))
    now = timezone.now()
    answer(project, items[0], team["ann-a"], POS, 3.0, now)
    answer(project, items[1], team["ann-a"], NEG, 30.0, now)
    answer(project, items[2], team["ann-b"], SKIP, 0.0, now)
    first = dashboard_refresh(project)
    assert first.summary["recounted_from"] is None  # the first refresh counts all the history
    before = set(AnnotatorHour.objects.values_list("annotator__username", "hour", "answers"))

    answer(project, items[3], team["ann-b"], POS, 0.0, now)
    answer(project, items[4], team["ann-a"], NEU, 0.0, timezone.now())
    second = dashboard_refresh(project)

    recounted = datetime.fromisoformat(second.summary["recounted_from"])
    assert recounted == hour(first.refreshed_at) - timedelta(hours=1)  # only the last hours
    rows = {
        (name, slot): (done, skips)
        for name, slot, done, skips in AnnotatorHour.objects.values_list(
            "annotator__username", "hour", "answers", "skips"
        )
    }
    older = {(name, slot, done) for name, slot, done in before if slot < recounted}
    assert older and all(rows[(name, slot)][0] == done for name, slot, done in older)
    expected = Counter()
    for name, created, skipped in Annotation.objects.values_list(
        "annotator__username", "created_at", "skipped"
    ):
        expected[(name, hour(created), skipped)] += 1
    assert rows == {
        (name, slot): (expected[(name, slot, False)], expected[(name, slot, True)])
        for name, slot, _ in expected
    }
    assert sum(a + s for a, s in rows.values()) == Annotation.objects.count() == 5
    assert DashboardState.objects.get(project=project).answers_seen == 5


def test_old_points_are_thinned_to_the_last_of_each_day_and_recent_ones_kept_hourly(project):
    now = timezone.now()
    current = hour(now)
    old_day = current - timedelta(days=5)
    stamps = [old_day.replace(hour=h) for h in (3, 9, 17)] + [
        current - timedelta(hours=h) for h in (1, 2, 30)
    ]
    for at in stamps:
        ProjectStatsPoint.objects.create(project=project, at=at, measured_at=at)
    dashboard_refresh(project)
    kept = set(ProjectStatsPoint.objects.filter(project=project).values_list("at", flat=True))
    assert kept == {old_day.replace(hour=17), *stamps[3:], current}
    over_time = dashboard_data(project)["progress"]["over_time"]
    assert [row["at"] for row in over_time] == sorted(at.isoformat() for at in kept)


def test_the_model_curve_keeps_each_version_whose_evaluation_slice_grew(seeded):
    trained = timezone.now() - timedelta(minutes=90)
    slices = {1: (0, 0), 2: (1, 1), 5: (1, 1), 10: (2, 1), 12: (3, 2)}  # version: (total, correct)
    for number, (total, correct) in slices.items():
        low, high = wilson_interval(correct, total)
        ModelVersion.objects.create(
            project=seeded,
            version=number,
            artifact=f"project-{seeded.pk}/v{number}.dpmodel",
            featurizer_name="text-hash",
            featurizer_version=1,
            labels_used=number,
            metrics={
                "eval": {
                    "total": total,
                    "correct": correct,
                    "accuracy": correct / total if total else None,
                    "low": low if total else None,
                    "high": high if total else None,
                }
            },
            trained_at=trained,
        )
    ProjectTraining.objects.update_or_create(
        project=seeded,
        defaults={
            "strategy": "entropy",
            "current_version": ModelVersion.objects.get(project=seeded, version=12),
            "trained_at": trained,
        },
    )
    dashboard_refresh(seeded)
    model = dashboard_data(seeded)["model"]

    wanted, seen = [], 0
    for number, (total, correct) in slices.items():
        if total > seen:
            seen = total
            low, high = wilson_interval(correct, total)
            wanted.append((number, number, total, correct, correct / total, low, high))
    assert [
        (p["version"], p["labels"], p["total"], p["correct"], p["accuracy"], p["low"], p["high"])
        for p in model["curve"]
    ] == wanted
    assert (model["strategy"], model["version"], model["labels_used"]) == ("entropy", 12, 12)
    assert abs(model["age_seconds"] - 90 * 60) <= 5
    assert "model" in DashboardState.objects.get(project=seeded).plots


# --- Pages, plots and the API -----------------------------------------------------------------


@pytest.fixture
def empty(db, reviewer) -> Project:
    project = project_create(name="Nothing yet", classes=["a", "b"])
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    return project


def test_an_empty_project_page_says_the_numbers_are_coming_then_shows_zeros(
    client, empty, reviewer
):
    client.force_login(reviewer)
    url = reverse("project_detail", args=[empty.pk])
    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="dash-computing"' in html and "being computed" in html
    assert "Start labelling" in html  # the actions stay

    dashboard_refresh(empty)
    html = client.get(url).content.decode()
    assert "dash-computing" not in html and 'id="dash-as-of"' in html
    assert "no items yet" in html
    assert "<img" not in html  # nothing to draw
    plot = reverse("project_dashboard_plot", args=[empty.pk, "progress"])
    assert client.get(plot).status_code == 404


def test_a_busy_project_page_shows_the_numbers_and_every_plot_is_an_svg(client, seeded, reviewer):
    dashboard_refresh(seeded)
    ref = reference(seeded, as_of(seeded))
    client.force_login(reviewer)
    html = client.get(reverse("project_detail", args=[seeded.pk])).content.decode()

    for label, key in [
        ("Complete", "complete"),
        ("In progress (some answers, not all)", "in_progress"),
        ("Open (no answer yet)", "open"),
        ("Answers still needed", "answers_remaining"),
    ]:
        assert f'<th scope="row">{label}</th><td class="num">{ref[key]}</td>' in html, label
    for person in dashboard_data(seeded)["throughput"]["annotators"]:
        name = person["username"]
        hours = sum(done for (_, who), (done, _) in ref["hourly"].items() if who == name)
        assert f'<th scope="row">{person["username"]}</th><td class="num">{hours}</td>' in html
    gold_row = "".join(f'<td class="num">{ref["gold"].get(c, 0)}</td>' for c in CLASSES)
    assert gold_row + f'<td class="num">{sum(ref["gold"].values())}</td>' in html
    assert f'<td class="num">{ref["agreement"]:.3f}</td>' in html
    assert html.count("<caption>") >= 6 and 'scope="col"' in html

    sources = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', html)
    names = {src.rsplit("/", 1)[1].removesuffix(".svg") for src, _ in sources}
    assert names == set(DashboardState.objects.get(project=seeded).plots)
    assert {"progress", "throughput_hourly", "throughput_daily", "gold_balance"} <= names
    for src, alt in sources:
        response = client.get(src)
        assert response.status_code == 200, src
        assert response["Content-Type"].startswith("image/svg+xml")
        assert response["Cache-Control"] == "no-store"
        assert "default-src 'none'" in response["Content-Security-Policy"]
        assert response.content.lstrip().startswith(b"<?xml") and b"<svg" in response.content
        assert alt


def test_plots_are_rendered_the_same_way_twice_and_class_names_stay_text(project, team):
    items = list(Item.objects.filter(project=project).order_by("id"))
    now = timezone.now()
    for item in items[:3]:
        answer(project, item, team["ann-a"], POS, 2.0, now)
    first = dashboard_refresh(project).plots
    again = DashboardState.objects.get(project=project).plots
    assert first == again and set(first) <= set(PLOTS)
    gold = first["gold_balance"]
    assert ">positive<" in gold and "Gold labels" in gold  # text as text, not glyph paths


def test_the_dashboard_page_reads_no_answer_and_no_item_rows(client, seeded, reviewer):
    """The page's numbers come from the worker's rows: it never scans the answers or items."""
    dashboard_refresh(seeded)
    client.force_login(reviewer)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("project_detail", args=[seeded.pk])).status_code == 200
    touched = [q["sql"] for q in queries.captured_queries]
    assert not [sql for sql in touched if re.search(r'"annotations_(annotation|item)"', sql)]
    assert len(touched) < 25


def test_an_annotator_gets_their_own_page_with_their_answers_not_the_dashboard(
    client, seeded, team
):
    dashboard_refresh(seeded)
    user = team["ann-a"]
    client.force_login(user)
    page = client.get(reverse("project_detail", args=[seeded.pk]))
    html = page.content.decode()
    assert [t.name for t in page.templates][0] == "annotations/project_detail.html"
    assert "dash-" not in html and "Start labelling" in html
    mine = Annotation.objects.filter(project=seeded, annotator=user, skipped=False)
    today = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    expected = (mine.filter(created_at__gte=today).count(), mine.count())
    assert f"<strong>{expected[0]}</strong> today · <strong>{expected[1]}</strong> in all" in html
    assert expected[1] == sum(1 for _, who, labels, _ in ANSWERS if who == "ann-a" and labels)
    plot = reverse("project_dashboard_plot", args=[seeded.pk, "progress"])
    assert client.get(plot).status_code == 403
    assert client.get(reverse("api-project-dashboard", args=[seeded.pk])).status_code == 403


def test_the_api_returns_the_same_numbers_as_the_page(seeded, reviewer, project_admin, outsider):
    dashboard_refresh(seeded)
    api = APIClient()
    url = reverse("api-project-dashboard", args=[seeded.pk])
    for user in (reviewer, project_admin):
        api.force_authenticate(user)
        response = api.get(url)
        assert response.status_code == 200
        assert response.json() == json.loads(json.dumps(dashboard_data(seeded)))
    assert response.json()["progress"]["complete"] == reference(seeded, as_of(seeded))["complete"]
    api.force_authenticate(outsider)
    assert api.get(url).status_code == 404


def test_an_unknown_plot_name_is_not_found(client, seeded, reviewer):
    dashboard_refresh(seeded)
    client.force_login(reviewer)
    url = reverse("project_dashboard_plot", args=[seeded.pk, "secrets"])
    assert client.get(url).status_code == 404


# --- The worker's job -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the job closes the thread's connection when done
def test_the_dashboard_job_is_due_until_refreshed_then_only_when_numbers_changed(
    seeded, team, settings
):
    settings.DASHBOARD_REFRESH_SECONDS = 60
    assert jobs.DASHBOARD in jobs.JOB_TYPES
    assert dashboard_due(seeded) and jobs.DASHBOARD in jobs.due_jobs(seeded.pk)
    assert seeded.pk in projects_dashboard_due()

    jobs.job_run({"type": jobs.DASHBOARD, "project_id": seeded.pk})
    state = DashboardState.objects.get(project=seeded)
    assert state.plots and state.answers_seen == Annotation.objects.filter(project=seeded).count()
    assert jobs.DASHBOARD not in jobs.due_jobs(seeded.pk)  # just refreshed

    def age(seconds: int) -> None:
        earlier = timezone.now() - timedelta(seconds=seconds)
        DashboardState.objects.filter(project=seeded).update(refreshed_at=earlier)

    age(120)
    assert not dashboard_due(seeded)  # old, but nothing changed
    assert seeded.pk not in projects_dashboard_due()
    item = Item.objects.filter(project=seeded, annotation_count=0).order_by("id").first()
    answer(seeded, item, team["ann-b"], POS, 0.0, timezone.now())
    age(30)
    assert not dashboard_due(seeded)  # changed, but refreshed less than a minute ago
    age(120)
    assert dashboard_due(seeded) and seeded.pk in projects_dashboard_due()
    jobs.job_run({"type": jobs.DASHBOARD, "project_id": seeded.pk})
    assert not dashboard_due(seeded)
    assert dashboard_data(seeded)["progress"]["answers"] == len(ANSWERS) + 1


def test_an_answer_that_committed_after_the_refresh_read_is_noticed_and_counted(seeded, team):
    state = dashboard_refresh(seeded)
    item = Item.objects.filter(project=seeded, annotation_count=0).order_by("id").first()
    # Stamped a minute before the refresh, committed after it had read the answers.
    answer(seeded, item, team["ann-c"], NEG, 0.0, state.refreshed_at - timedelta(minutes=1))
    earlier = timezone.now() - timedelta(minutes=5)
    DashboardState.objects.filter(project=seeded).update(refreshed_at=earlier)
    assert dashboard_due(seeded)
    dashboard_refresh(seeded)
    ref = reference(seeded, as_of(seeded))
    assert by_slot(dashboard_data(seeded)["throughput"]["hourly"], "hour") == ref["hourly"]


def test_a_decision_or_a_flag_alone_makes_the_dashboard_due(seeded, reviewer):
    dashboard_refresh(seeded)
    earlier = timezone.now() - timedelta(minutes=5)
    DashboardState.objects.filter(project=seeded).update(refreshed_at=earlier)
    assert not dashboard_due(seeded)
    open_review = Review.objects.get(project=seeded, status=Review.Status.OPEN)
    review_decide(project=seeded, review_id=open_review.pk, reviewer=reviewer, labels=NEG)
    assert dashboard_due(seeded)
    dashboard_refresh(seeded)
    DashboardState.objects.filter(project=seeded).update(refreshed_at=earlier)
    item = Item.objects.filter(project=seeded, gold__isnull=True).order_by("id").first()
    review_flag(item=item, user=reviewer, note="odd one")
    assert dashboard_due(seeded)


def test_class_and_user_names_are_text_in_the_tables_and_the_plots(client, reviewer):
    payload = '<script>alert("x")</script>'
    project = project_create(name="Evil names", classes=[payload, "plain"])
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    (item,) = add_text_items(project, ["one"])
    user = _member(project, "<b>mallory</b>", Membership.Role.ANNOTATOR)
    answer(project, item, user, [payload], 1.0, timezone.now())
    state = dashboard_refresh(project)
    client.force_login(reviewer)
    html = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert payload not in html and "<b>mallory</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;b&gt;mallory&lt;/b&gt;" in html
    for svg in state.plots.values():
        assert "<script" not in svg and "<b>" not in svg
    assert "&lt;script&gt;" in state.plots["gold_balance"]
    assert "&lt;b&gt;mallory" in state.plots["throughput_daily"]
