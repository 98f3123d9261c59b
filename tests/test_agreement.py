"""Agreement coefficients against hand-computed cases and published worked examples."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from annotations.models import Project
from annotations.services import project_create
from curation.agreement import (
    Ratings,
    annotator_confusion,
    fleiss_kappa,
    krippendorff_alpha,
    pairwise_cohen_kappa,
    per_class,
    percent_agreement,
)
from curation.services import agreement_report
from tests.conftest import add_text_items, make_user, submit_handed_out


def small() -> Ratings:
    # item 1: a, a, b · item 2: a, a · item 3: one answer only
    return Ratings.from_answers(
        [
            (1, "ann", "a"),
            (1, "bob", "a"),
            (1, "cy", "b"),
            (2, "ann", "a"),
            (2, "bob", "a"),
            (3, "cy", "b"),
        ],
        ["a", "b"],
    )


def test_percent_agreement_is_the_mean_share_of_agreeing_pairs_per_item():
    # item 1: 1 agreeing pair of 3; item 2: 1 of 1; item 3 has no pair
    assert percent_agreement(small()) == pytest.approx((1 / 3 + 1) / 2)


def test_the_confusion_table_counts_ordered_pairs_of_annotators():
    # item 1: (a,a) ×2, (a,b) ×2, (b,a) ×2 · item 2: (a,a) ×2
    np.testing.assert_array_equal(annotator_confusion(small()), [[4, 2], [2, 0]])


def test_cohens_kappa_matches_the_worked_example():
    """50 items, two raters: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no → p_o 0.7, p_e 0.5,
    kappa 0.4."""
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10
    pairs += [("no", "no")] * 15
    answers = [(n, "A", x) for n, (x, _) in enumerate(pairs)]
    answers += [(n, "B", y) for n, (_, y) in enumerate(pairs)]
    kappas = pairwise_cohen_kappa(Ratings.from_answers(answers, ["yes", "no"]))
    (kappa, shared) = kappas[("A", "B")]
    assert shared == 50 and kappa == pytest.approx(0.4)


def test_cohens_kappa_uses_only_the_items_both_labelled_and_is_none_when_undefined():
    kappas = pairwise_cohen_kappa(small())
    assert kappas[("ann", "bob")] == (None, 2)  # both always chose "a": kappa is 0/0
    assert kappas[("ann", "cy")][1] == 1 and kappas[("ann", "cy")][0] is None  # one shared item


FLEISS_TABLE = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_matches_the_worked_example():
    """Fleiss (1971) as worked on Wikipedia: 10 subjects, 14 raters, 5 categories → 0.210."""
    answers = []
    for item, row in enumerate(FLEISS_TABLE):
        rater = 0
        for category, n in enumerate(row):
            for _ in range(n):
                answers.append((item, rater, str(category + 1)))
                rater += 1
    ratings = Ratings.from_answers(answers, ["1", "2", "3", "4", "5"])
    kappa, used = fleiss_kappa(ratings)
    assert used == 10 and kappa == pytest.approx(0.20993, abs=1e-5)
    np.testing.assert_array_equal(ratings.counts(), FLEISS_TABLE)


def test_fleiss_kappa_uses_the_items_with_the_most_common_number_of_answers():
    kappa, used = fleiss_kappa(small())
    # Items 1 (3 answers) and 2 (2 answers): one of each, the tie goes to 2 answers. Item 2's
    # two answers agree on one class, so chance agreement is 1 and kappa is undefined.
    assert (kappa, used) == (None, 1)


KRIPPENDORFF = {  # Krippendorff (2011), "Computing Krippendorff's alpha", nominal example
    "A": "1 2 3 3 2 1 4 1 2 . . .",
    "B": "1 2 3 3 2 2 4 1 2 5 . 3",
    "C": ". 3 3 3 2 3 4 2 2 5 1 .",
    "D": "1 2 3 3 2 4 4 1 2 5 1 .",
}


def test_krippendorffs_alpha_matches_the_worked_example():
    answers = [
        (unit, observer, value)
        for observer, row in KRIPPENDORFF.items()
        for unit, value in enumerate(row.split())
        if value != "."
    ]
    alpha = krippendorff_alpha(Ratings.from_answers(answers, ["1", "2", "3", "4", "5"]))
    assert alpha == pytest.approx(0.743, abs=5e-4)


def test_krippendorffs_alpha_is_none_without_pairs_or_variation():
    lone = Ratings.from_answers([(1, "a", "x"), (2, "b", "y")], ["x", "y"])
    same = Ratings.from_answers([(1, "a", "x"), (1, "b", "x")], ["x", "y"])
    assert krippendorff_alpha(lone) is None and krippendorff_alpha(same) is None


def test_multi_label_answers_are_measured_per_class():
    answers = [
        (1, "a", ["cat", "dog"]),
        (1, "b", ["cat"]),
        (2, "a", []),
        (2, "b", ["dog"]),
    ]
    by_class = per_class(answers, ["cat", "dog"])
    assert percent_agreement(by_class["cat"]) == 1.0  # yes/yes, no/no
    assert percent_agreement(by_class["dog"]) == 0.0  # yes/no, no/yes


def test_an_unknown_class_is_refused_with_where_it_is():
    with pytest.raises(ValueError, match="item 7, annotator 'ann': unknown class 'zebra'"):
        Ratings.from_answers([(7, "ann", "zebra")], ["cat"])


@pytest.fixture
def three_annotators(db):

    project = project_create(name="Agree", classes=["pos", "neg"])
    project.overlap = 3
    project.save(update_fields=["overlap"])
    items = add_text_items(project, ["one", "two", "three"], prefix="t")
    users = [make_user(name) for name in ("ann", "bob", "cy")]
    return project, items, users


def answer(item, user, labels, skipped=False):
    submit_handed_out(
        item=item, annotator=user, labels=labels, skipped=skipped, client_uuid=uuid.uuid4()
    )


def test_the_project_report_reads_the_answers_from_the_database(three_annotators):

    project, (one, two, three), (ann, bob, cy) = three_annotators
    answer(one, ann, ["pos"])
    answer(one, bob, ["pos"])
    answer(one, cy, ["neg"])
    answer(two, ann, ["pos"])
    answer(two, bob, ["pos"])
    answer(two, cy, [], skipped=True)  # a skip is not an answer
    answer(three, cy, ["neg"])

    report = agreement_report(project)

    assert report["annotations"] == 6 and report["items"] == 3
    assert report["annotators"] == ["ann", "bob", "cy"]
    assert report["percent_agreement"] == pytest.approx((1 / 3 + 1) / 2)  # as in small()
    assert report["confusion"] == [[4, 2], [2, 0]]
    pairs = {tuple(p["annotators"]): (p["kappa"], p["shared_items"]) for p in report["cohen_kappa"]}
    assert pairs[("ann", "bob")] == (None, 2) and pairs[("bob", "cy")][1] == 1


def test_a_multi_label_project_is_reported_per_class(db):

    project = project_create(
        name="Tags", classes=["cat", "dog"], labeling_mode=Project.LabelingMode.MULTI, overlap=2
    )
    (item,) = add_text_items(project, ["a photo"], prefix="p")
    answer(item, make_user("ann"), ["cat", "dog"])
    answer(item, make_user("bob"), ["cat"])

    report = agreement_report(project)

    assert set(report["per_class"]) == {"cat", "dog"}
    assert report["per_class"]["cat"]["percent_agreement"] == 1.0
    assert report["per_class"]["dog"]["percent_agreement"] == 0.0


def test_the_api_gives_reviewers_the_report_and_refuses_annotators(client, three_annotators):
    from annotations.models import Membership

    project, (one, _, _), (ann, bob, cy) = three_annotators
    answer(one, ann, ["pos"])
    answer(one, bob, ["neg"])
    Membership.objects.create(project=project, user=ann, role=Membership.Role.ANNOTATOR)
    Membership.objects.create(project=project, user=cy, role=Membership.Role.REVIEWER)
    url = f"/api/projects/{project.pk}/agreement/"

    client.force_login(cy)
    report = client.get(url)
    client.force_login(ann)
    refused = client.get(url)

    assert report.status_code == 200
    assert report.json()["percent_agreement"] == 0.0 and report.json()["annotations"] == 2
    assert refused.status_code == 403  # a member whose role does not allow it
