"""Annotator quality: accuracy against adjudicated labels, leave-one-out agreement, the
below-threshold flag, and the quality page and API, against hand-computed small cases."""

from __future__ import annotations

import re
import uuid

import numpy as np
import pytest
from django.contrib.auth.views import redirect_to_login
from django.urls import reverse

from annotations.models import Item, Membership, Project, Review
from annotations.review import review_decide, review_flag
from annotations.services import project_create
from annotations.templatetags.quality_tags import (
    contrast,
    kappa_colour,
    kappa_colours,
    kappa_reading,
    share_colour,
    text_on,
)
from curation.quality import annotator_table, encode_answers, score_annotators
from curation.services import annotator_quality, quality_report
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

P, N, U = "positive", "negative", "neutral"


def answer(item: Item, user, label: str | list[str]) -> None:
    labels = label if isinstance(label, list) else [label]
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


def decide(project: Project, item: Item, reviewer, label: str) -> None:
    review = Review.objects.get(item=item)
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=[label])


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["annotator"]: row for row in rows}


@pytest.fixture
def three(project) -> tuple[Project, list[Item], list]:
    """The standard project with three answers per item and annotators ann, bob and cy."""
    project.overlap = 3
    project.save(update_fields=["overlap"])
    users = []
    for name in ("ann", "bob", "cy"):
        user = make_user(name)
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        users.append(user)
    return project, list(project.items.order_by("external_id")), users


@pytest.fixture
def worked(three, reviewer) -> Project:
    """Six items, hand-computed below.

    item  ann bob cy   gold
    t0    P   P   P    unanimous P
    t1    P   P   N    majority P
    t2    N   N   P    majority N
    t3    P   N   U    a tie, adjudicated P
    t4    N   U   P    a tie, adjudicated N
    t5    P   P   N    majority P, flagged and adjudicated N
    """
    project, items, (ann, bob, cy) = three
    table = [(P, P, P), (P, P, N), (N, N, P), (P, N, U), (N, U, P), (P, P, N)]
    for item, labels in zip(items, table, strict=False):
        for user, label in zip((ann, bob, cy), labels, strict=True):
            answer(item, user, label)
    t3, t4, t5 = items[3], items[4], items[5]
    decide(project, t3, reviewer, P)  # the ties went to review by themselves
    decide(project, t4, reviewer, N)
    review_flag(item=t5, user=reviewer, note="sarcasm")
    decide(project, t5, reviewer, N)
    return project


# --- The measures, from the database --------------------------------------------------------


def test_accuracy_counts_only_the_adjudicated_items(worked):
    rows = by_name(annotator_quality(worked))
    # t3 P, t4 N, t5 N: ann P,N,P → 2 of 3; bob N,U,P → 0; cy U,P,N → 1
    assert (rows["ann"]["correct"], rows["ann"]["gold_items"]) == (2, 3)
    assert (rows["bob"]["correct"], rows["bob"]["gold_items"]) == (0, 3)
    assert (rows["cy"]["correct"], rows["cy"]["gold_items"]) == (1, 3)
    assert rows["ann"]["accuracy"] == pytest.approx(2 / 3)
    assert rows["bob"]["accuracy"] == 0.0
    assert all(row["answers"] == 6 for row in rows.values())


def test_accuracy_comes_with_a_95_percent_wilson_interval(worked):
    ann = by_name(annotator_quality(worked))["ann"]
    # Wilson, 2 of 3, z = 1.96: centre (2/3 + 1.96²/6) / (1 + 1.96²/3) = 0.5731, half-width 0.3654
    low, high = ann["accuracy_interval"]
    assert low == pytest.approx(0.2077, abs=1e-4) and high == pytest.approx(0.9385, abs=1e-4)


def test_agreement_is_with_the_others_majority_never_including_ones_own_answer(worked):
    rows = by_name(annotator_quality(worked))
    # t0 (P P P): everyone agrees with the other two. t1 (P P N) and t2 (N N P): for ann and
    # bob the other two answers tie, so there is no reference; cy is outvoted by the other two
    # both times. Judged against the stored majority instead, ann and bob would score 3 of 3.
    assert (rows["ann"]["agreeing"], rows["ann"]["agreement_items"]) == (1, 1)
    assert (rows["bob"]["agreeing"], rows["bob"]["agreement_items"]) == (1, 1)
    assert (rows["cy"]["agreeing"], rows["cy"]["agreement_items"]) == (1, 3)


def test_with_few_items_no_one_is_judged(worked):
    rows = annotator_quality(worked)
    assert all(row["quality"] is None and not row["below_threshold"] for row in rows)


def test_an_annotator_outvoted_on_five_items_is_below_the_threshold(three):
    project, items, (ann, bob, cy) = three
    for item in items[:5]:
        answer(item, ann, P)
        answer(item, bob, P)
        answer(item, cy, N)

    report = quality_report(project)

    rows = by_name(report["annotators"])
    assert rows["cy"]["agreement"] == 0.0 and rows["cy"]["quality_basis"] == "agreement"
    assert rows["cy"]["below_threshold"] is True
    assert rows["ann"]["quality"] is None  # the other two always tie for ann: no reference
    assert report["below_threshold"] == ["cy"]


def test_the_report_counts_gold_labels_by_source_and_reviews_by_status(worked):
    report = quality_report(worked)
    assert report["gold"] == {
        "adjudicated": 3,
        "unanimous": 1,
        "majority": 2,
        "consensus": 0,
        "tie": 0,
        "incomplete": 0,
    }
    assert report["reviews"] == {"open": 0, "decided": 3}
    assert report["threshold"] == 0.7 and report["agreement"]["annotations"] == 18


def test_items_still_waiting_for_answers_are_counted_as_incomplete_not_unanimous(
    client, three, reviewer
):
    project, items, (ann, bob, cy) = three
    answer(items[0], ann, P)  # one of three answers: "unanimous" so far, but not final
    answer(items[1], ann, P)
    answer(items[1], bob, N)
    for user in (ann, bob, cy):
        answer(items[2], user, P)
    report = quality_report(project)
    assert report["gold"] == {
        "adjudicated": 0,
        "unanimous": 1,
        "majority": 0,
        "consensus": 0,
        "tie": 0,
        "incomplete": 2,
    }
    html = page(client, reviewer, project).content.decode()
    assert 'Unanimous</td><td class="num">1<' in html
    assert 'still waits for answers</td><td class="num">2<' in html


# --- The measures, pure --------------------------------------------------------------------


def scores(rows, gold, *, multi_label=False, classes=("a", "b", "c")):
    answers = encode_answers(rows, classes, multi_label=multi_label)
    return score_annotators(answers, gold, multi_label=multi_label)


def test_a_multi_label_answer_is_right_only_when_its_set_equals_the_gold_set():
    rows = [
        (1, "ann", ["a", "b"]),
        (1, "bob", ["a"]),
        (2, "ann", []),
        (2, "bob", []),
    ]
    s = scores(rows, [(1, ["a", "b"]), (2, [])], multi_label=True)
    assert s.annotators == ("ann", "bob")
    assert s.correct.tolist() == [2, 1] and s.gold_items.tolist() == [2, 2]


def test_multi_label_leave_one_out_takes_each_class_more_than_half_of_the_others_chose():
    # Item 1, for cy: the others chose {a, b} and {a}: a by 2 of 2, b by 1 of 2 → {a}.
    rows = [(1, "ann", ["a", "b"]), (1, "bob", ["a"]), (1, "cy", ["a"])]
    s = scores(rows, [], multi_label=True)
    # ann: others {a},{a} → {a} ≠ {a,b}; bob: others {a,b},{a} → {a} = {a}; cy: same → agrees
    assert s.agreement_items.tolist() == [1, 1, 1]
    assert s.agreeing.tolist() == [0, 1, 1]


def test_answers_naming_no_known_class_are_left_out():
    s = scores([(1, "ann", ["zebra"]), (1, "bob", ["a"])], [(1, ["a"])])
    assert s.annotators == ("bob",) and s.correct.tolist() == [1]


def test_an_item_answered_by_one_annotator_only_is_not_compared():
    s = scores([(1, "ann", ["a"])], [])
    assert s.answers.tolist() == [1] and s.agreement_items.tolist() == [0]


def test_accuracy_is_preferred_once_an_annotator_has_five_adjudicated_items():
    # ann: 4 of 5 adjudicated right (80%) but always outvoted elsewhere (0 of 5 agreement).
    rows, gold = [], []
    for item in range(5):
        rows.append((item, "ann", ["a"]))
        gold.append((item, ["a"] if item < 4 else ["b"]))
    for item in range(5, 10):
        rows += [(item, "ann", ["a"]), (item, "bob", ["b"]), (item, "cy", ["b"])]
    table = by_name(annotator_table(scores(rows, gold), threshold=0.7))
    assert table["ann"]["quality_basis"] == "gold" and table["ann"]["quality"] == 0.8
    assert not table["ann"]["below_threshold"]

    table = by_name(annotator_table(scores(rows, gold[:4]), threshold=0.7))
    assert table["ann"]["quality_basis"] == "agreement" and table["ann"]["below_threshold"]


def test_scoring_matches_a_direct_leave_one_out_on_random_answers():
    """The vectorised counts against a plain loop that follows `annotations.gold.derive`."""
    rng = np.random.default_rng(7)
    classes = ("a", "b", "c")
    rows = []
    for item in range(300):
        for who in rng.choice(6, rng.integers(1, 5), replace=False):
            rows.append((item, f"u{who}", [classes[rng.integers(0, 3)]]))
    gold = [(item, ["a"]) for item in range(0, 300, 7)]
    s = scores(rows, gold, classes=classes)

    decided = {item for item, _ in gold}
    expect: dict[str, list[int]] = {}
    for item, who, (label,) in rows:
        counts = expect.setdefault(who, [0, 0, 0, 0])
        if item in decided:
            counts[0] += 1
            counts[1] += label == "a"
            continue
        others = [lab for i, w, (lab,) in rows if i == item and w != who]
        tally = sorted(((others.count(c), c) for c in set(others)), reverse=True)
        if tally and (len(tally) == 1 or tally[0][0] > tally[1][0]):
            counts[2] += 1
            counts[3] += label == tally[0][1]
    for n, who in enumerate(s.annotators):
        got = [s.gold_items[n], s.correct[n], s.agreement_items[n], s.agreeing[n]]
        assert got == expect[who], who


# --- Colours --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", np.linspace(-1, 1, 81))
def test_every_heat_map_cell_is_readable(value):
    for background in (kappa_colour(value), share_colour(abs(value))):
        assert contrast(background, text_on(background)) >= 4.5


def test_kappa_cells_go_from_red_through_white_to_blue_and_read_as_landis_and_koch():
    red, white, blue = kappa_colour(-1), kappa_colour(0), kappa_colour(1)
    assert red[0] > red[2] and blue[2] > blue[0] and min(white) > 240
    assert kappa_reading(0.4) == "fair agreement" and kappa_reading(-0.1).startswith("poor")
    assert kappa_reading(0.81) == "almost perfect agreement" and kappa_reading(None)


# --- The page and the API -------------------------------------------------------------------


def page(client, user, project):
    client.force_login(user)
    return client.get(reverse("project_quality", args=[project.pk]))


def test_a_reviewer_sees_the_numbers_and_a_coloured_cell_for_every_pair(client, worked, reviewer):
    response = page(client, reviewer, worked)
    assert response.status_code == 200
    html = response.content.decode()
    # ann and bob agree on t0, t1, t2, t5: p_o = 4/6; marginals P 4, N 2 and P 3, N 2, U 1:
    # p_e = (4·3 + 2·2) / 36 = 16/36; kappa = (24/36 − 16/36) / (20/36) = 0.40
    cell = re.search(
        r'<td class="heat-cell" (data-bg="[^"]*" data-fg="[^"]*") title="ann and bob: κ 0.40 ', html
    )
    assert cell and cell.group(1) == kappa_colours(0.4)
    assert re.search(r'title="bob and ann: κ 0.40 [^"]*">0.40</td>', html)  # symmetric
    assert html.count('title="ann and bob: κ') == 1 and 'class="heat-self"' in html
    assert ">33%<" in html  # percent agreement: (1 + 1/3 + 1/3 + 0 + 0 + 1/3) / 6
    assert "67% <span" in html and "2/3" in html  # ann's accuracy
    assert "21–94%" in html  # … and its interval
    assert 'Adjudicated by a reviewer</td><td class="num">3<' in html
    assert reverse("review", args=[worked.pk]) in html


def test_the_below_threshold_box_is_for_project_admins_only(client, three, reviewer, project_admin):
    project, items, (ann, bob, cy) = three
    for item in items[:5]:
        answer(item, ann, P)
        answer(item, bob, P)
        answer(item, cy, N)

    as_reviewer = page(client, reviewer, project).content.decode()
    assert "Annotators below the quality threshold" not in as_reviewer

    as_admin = page(client, project_admin, project).content.decode()
    assert "Annotators below the quality threshold (1)" in as_admin
    assert "<li><b>cy</b>: 0% agreement on 5 items" in as_admin


def test_an_empty_project_reads_well(client, project, reviewer, project_admin):
    response = page(client, reviewer, project)
    assert response.status_code == 200
    assert b"No answers yet" in response.content
    assert b"No one has answered yet" in response.content
    admin = page(client, project_admin, project).content.decode()
    assert "Annotators below the quality threshold (0)" in admin


def test_one_annotator_only_gets_no_pairs_and_undefined_coefficients(client, project, reviewer):
    ann = make_user("ann")
    for item in project.items.all()[:3]:
        answer(item, ann, P)
    html = page(client, reviewer, project).content.decode()
    assert "Needs two or more annotators; so far only ann has answered." in html
    assert "Not defined yet" in html
    assert 'heat-cell" data-bg="#' in html  # the confusion table still shows


def test_a_multi_label_project_is_shown_per_class_and_user_text_is_escaped(client, db):
    project = project_create(
        name="Tags",
        classes=["cat", "<i>dog</i>"],
        labeling_mode=Project.LabelingMode.MULTI,
        overlap=2,
    )
    (item,) = add_text_items(project, ["a photo"], prefix="p")
    reviewer = make_user("rev")
    Membership.objects.create(project=project, user=reviewer, role=Membership.Role.REVIEWER)
    answer(item, make_user("ann"), ["cat", "<i>dog</i>"])
    answer(item, make_user("<b>bob</b>"), ["cat"])

    html = page(client, reviewer, project).content.decode()

    assert "Class “cat”" in html and "Class “&lt;i&gt;dog&lt;/i&gt;”" in html
    assert "<i>dog</i>" not in html and "<b>bob</b>" not in html
    assert "&lt;b&gt;bob&lt;/b&gt;" in html


@pytest.mark.parametrize("name", ["project_quality", "api-quality"])
def test_annotators_are_refused_and_outsiders_do_not_find_the_project(
    client, project, annotator, outsider, name
):
    url = reverse(name, args=[project.pk])
    client.force_login(annotator)
    assert client.get(url).status_code == 403
    client.force_login(outsider)
    assert client.get(url).status_code == 404


def test_anonymous_users_are_sent_to_log_in(client, project):
    url = reverse("project_quality", args=[project.pk])
    response = client.get(url)
    assert response.status_code == 302 and response["Location"] == redirect_to_login(url).url


def test_the_api_gives_a_project_admin_the_report(client, worked, project_admin):
    client.force_login(project_admin)
    response = client.get(reverse("api-quality", args=[worked.pk]))
    assert response.status_code == 200
    data = response.json()
    ann = by_name(data["annotators"])["ann"]
    assert (ann["correct"], ann["gold_items"], ann["agreeing"]) == (2, 3, 1)
    assert data["reviews"]["decided"] == 3 and data["below_threshold"] == []
    assert data["agreement"]["annotators"] == ["ann", "bob", "cy"]


def test_the_project_page_links_to_quality_for_reviewers_only(client, project, reviewer, annotator):
    link = reverse("project_quality", args=[project.pk]).encode()
    client.force_login(reviewer)
    assert link in client.get(reverse("project_detail", args=[project.pk])).content
    client.force_login(annotator)
    assert link not in client.get(reverse("project_detail", args=[project.pk])).content
