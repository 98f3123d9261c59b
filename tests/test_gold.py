"""Gold labels: derived by hand-checkable rules, kept in step with every answer and decision,
the disagreement side of the review queue, and no rows left behind by deletions."""

from __future__ import annotations

import uuid

import pytest

from annotations.gold import Gold, derive, gold_rebuild
from annotations.models import (
    Annotation,
    GoldLabel,
    GoldSource,
    Item,
    Membership,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import review_decide, review_flag, review_next, review_reopen
from annotations.services import annotations_delete, items_delete, project_set_overlap
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

ABC = ["a", "b", "c"]


def label(item: Item, user, labels: list[str], *, skipped: bool = False) -> None:
    submit_handed_out(
        item=item, annotator=user, labels=labels, skipped=skipped, client_uuid=uuid.uuid4()
    )


def gold_of(item: Item) -> GoldLabel | None:
    return GoldLabel.objects.filter(item=item).first()


def review_of(item: Item) -> Review | None:
    return Review.objects.filter(item=item).first()


@pytest.fixture
def crowd(project) -> list:
    """Three annotators of the project."""
    users = [make_user(name) for name in ("ann", "bob", "cy")]
    Membership.objects.bulk_create(
        [Membership(project=project, user=u, role=Membership.Role.ANNOTATOR) for u in users]
    )
    return users


def with_overlap(project: Project, overlap: int) -> Project:
    Project.objects.filter(pk=project.pk).update(overlap=overlap)
    project.refresh_from_db()
    return project


def first_item(project: Project) -> Item:
    item = Item.objects.filter(project=project).order_by("id").first()
    item.project = project
    return item


# --- derive: the rules, on hand-computed cases ---------------------------------------------------


def test_unanimous_answers_are_the_gold_label_with_full_agreement():
    assert derive([["b"], ["b"], ["b"]], ABC, multi_label=False) == Gold(
        ["b"], GoldSource.UNANIMOUS, 1.0, 3
    )


def test_two_of_three_is_a_majority_with_agreement_two_thirds():
    gold = derive([["a"], ["c"], ["a"]], ABC, multi_label=False)
    assert gold.labels == ["a"] and gold.source == GoldSource.MAJORITY
    assert gold.agreement == pytest.approx(2 / 3) and gold.answers == 3


def test_a_tie_for_the_top_class_has_no_gold_label():
    two = derive([["a"], ["b"]], ABC, multi_label=False)
    three = derive([["a"], ["b"], ["c"]], ABC, multi_label=False)
    two_two = derive([["a"], ["b"], ["b"], ["a"], ["c"]], ABC, multi_label=False)
    assert two == Gold(None, GoldSource.TIE, 0.5, 2)
    assert three.labels is None and three.agreement == pytest.approx(1 / 3)
    assert two_two.labels is None and two_two.source == GoldSource.TIE


def test_multi_label_gold_is_each_class_more_than_half_chose_and_agreement_is_exact_sets():
    # a: 3 votes, b: 1, c: 1 of 3 answers; only the second answer is exactly {a}.
    gold = derive([["a", "b"], ["a"], ["a", "c"]], ABC, multi_label=True)
    assert gold.labels == ["a"] and gold.source == GoldSource.MAJORITY
    assert gold.agreement == pytest.approx(1 / 3)
    # Answers in any order come out in schema order, and equal sets are unanimous.
    same = derive([["c", "a"], ["a", "c"]], ABC, multi_label=True)
    assert same == Gold(["a", "c"], GoldSource.UNANIMOUS, 1.0, 2)
    # Exactly half is not a majority, and "no class" is a valid multi-label answer.
    assert derive([["a"], []], ABC, multi_label=True).labels == []
    assert derive([[], [], ["b"]], ABC, multi_label=True).agreement == pytest.approx(2 / 3)


def test_class_names_not_in_the_schema_are_ignored():
    gold = derive([["a"], ["gone"], ["a"]], ABC, multi_label=False)
    assert gold.labels == ["a"] and gold.agreement == pytest.approx(2 / 3)
    assert derive([["gone"]], ABC, multi_label=False) is None
    assert derive([["a", "gone"], ["a"]], ABC, multi_label=True).labels == ["a"]


def test_one_answer_is_unanimous_and_no_answer_is_no_gold():
    assert derive([["c"]], ABC, multi_label=False) == Gold(["c"], GoldSource.UNANIMOUS, 1.0, 1)
    assert derive([], ABC, multi_label=False) is None


# --- gold rows follow the answers ----------------------------------------------------------------


def test_the_gold_row_follows_each_answer_and_edit(project, crowd):
    ann, bob, cy = crowd
    item = first_item(with_overlap(project, 3))

    label(item, ann, ["positive"])
    gold = gold_of(item)
    assert (gold.labels, gold.source, gold.answers) == (["positive"], GoldSource.UNANIMOUS, 1)

    label(item, bob, ["negative"])
    assert (gold_of(item).labels, gold_of(item).source) == (None, GoldSource.TIE)

    label(item, cy, ["negative"])
    gold = gold_of(item)
    assert (gold.labels, gold.source, gold.answers) == (["negative"], GoldSource.MAJORITY, 3)
    assert gold.agreement == pytest.approx(2 / 3)

    label(item, ann, ["negative"])  # ann changes her mind
    gold = gold_of(item)
    assert (gold.labels, gold.source, gold.agreement) == (["negative"], GoldSource.UNANIMOUS, 1.0)


def test_a_skipped_item_has_no_gold_row_and_changing_the_only_answer_to_skipped_deletes_it(
    project, annotator
):
    items = list(Item.objects.filter(project=project).order_by("id")[:2])
    label(items[0], annotator, [], skipped=True)
    label(items[1], annotator, ["neutral"])
    assert gold_of(items[0]) is None and gold_of(items[1]) is not None

    label(items[1], annotator, [], skipped=True)

    assert not GoldLabel.objects.filter(project=project).exists()


def test_a_decision_makes_the_gold_label_adjudicated_and_later_answers_do_not_change_it(
    project, crowd, reviewer
):
    ann, bob, cy = crowd
    item = first_item(with_overlap(project, 2))
    label(item, ann, ["positive"])
    label(item, bob, ["negative"])
    review = review_of(item)

    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["neutral"])
    gold = gold_of(item)
    assert (gold.labels, gold.source, gold.answers) == (["neutral"], GoldSource.ADJUDICATED, 2)

    label(item, ann, ["negative"])  # the answers now agree on something else
    project_set_overlap(project, 3)  # recounted: the item is open again
    label(item, cy, ["negative"])  # and a third one arrives

    gold = gold_of(item)
    assert (gold.labels, gold.source, gold.answers) == (["neutral"], GoldSource.ADJUDICATED, 3)
    assert review_of(item).status == Review.Status.DECIDED


def test_reopening_a_decision_reverts_the_gold_label_to_the_answers(project, crowd, reviewer):
    ann, bob, _ = crowd
    item = first_item(with_overlap(project, 2))
    label(item, ann, ["positive"])
    label(item, bob, ["positive"])
    review = review_flag(item=item, user=bob, note="sarcasm?")
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["negative"])
    assert gold_of(item).labels == ["negative"]

    review_reopen(project=project, review_id=review.pk, user=reviewer)

    gold = gold_of(item)
    assert (gold.labels, gold.source) == (["positive"], GoldSource.UNANIMOUS)


# --- the disagreement review ---------------------------------------------------------------------


def test_a_disagreement_goes_to_review_only_once_the_item_is_complete(project, crowd):
    ann, bob, cy = crowd
    item = first_item(with_overlap(project, 3))
    label(item, ann, ["positive"])
    label(item, bob, ["negative"])  # a tie, but a third answer is still to come
    assert review_of(item) is None

    label(item, cy, ["neutral"])  # complete, three ways apart

    review = review_of(item)
    assert review.status == Review.Status.OPEN
    assert review.reasons == [Review.Reason.DISAGREEMENT]


def test_two_of_three_passes_the_default_threshold_and_a_stricter_one_sends_it_to_review(
    project, crowd
):
    ann, bob, cy = crowd
    project = with_overlap(project, 3)
    assert project.review_threshold == 0.66
    first, second = list(Item.objects.filter(project=project).order_by("id")[:2])
    for who, name in zip(crowd, ["positive", "positive", "negative"], strict=True):
        label(first, who, [name])
    assert review_of(first) is None

    Project.objects.filter(pk=project.pk).update(review_threshold=0.7)
    project.refresh_from_db()
    second.project = project
    for who, name in zip(crowd, ["positive", "positive", "negative"], strict=True):
        label(second, who, [name])

    assert review_of(second).reasons == [Review.Reason.DISAGREEMENT]


def test_a_tie_always_goes_to_review_even_with_a_threshold_of_zero(project, crowd):
    ann, bob, _ = crowd
    Project.objects.filter(pk=project.pk).update(overlap=2, review_threshold=0.0)
    project.refresh_from_db()
    item = first_item(project)
    label(item, ann, ["positive"])
    label(item, bob, ["neutral"])

    assert review_of(item).reasons == [Review.Reason.DISAGREEMENT]
    assert gold_of(item).labels is None


def test_editing_answers_into_agreement_removes_a_review_nobody_touched(project, crowd):
    ann, bob, _ = crowd
    item = first_item(with_overlap(project, 2))
    label(item, ann, ["positive"])
    label(item, bob, ["neutral"])
    assert review_of(item) is not None

    label(item, bob, ["positive"])

    assert review_of(item) is None
    assert gold_of(item).source == GoldSource.UNANIMOUS


def test_editing_answers_into_agreement_keeps_a_flagged_review_without_the_disagreement(
    project, crowd
):
    ann, bob, _ = crowd
    item = first_item(with_overlap(project, 2))
    label(item, ann, ["positive"])
    label(item, bob, ["neutral"])
    review_flag(item=item, user=ann, note="the text is cut off")

    label(item, bob, ["positive"])

    review = review_of(item)
    assert review.status == Review.Status.OPEN and review.reasons == [Review.Reason.FLAG]


def test_a_reopened_review_whose_answers_came_to_agree_stays_with_its_history(
    project, crowd, reviewer
):
    ann, bob, _ = crowd
    item = first_item(with_overlap(project, 2))
    label(item, ann, ["positive"])
    label(item, bob, ["neutral"])
    review = review_of(item)
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["positive"])
    label(item, bob, ["positive"])

    review_reopen(project=project, review_id=review.pk, user=reviewer, comment="second look")

    review = review_of(item)
    assert review.status == Review.Status.OPEN and review.reasons == []
    assert review.events.count() == 2
    assert review_next(project=project, reviewer=reviewer) == review


# --- deletions and rebuilds ----------------------------------------------------------------------


def orphans(project: Project) -> dict[str, int]:
    """Rows that point at an item of `project` that no longer exists, or a gold label with no
    answer and no decision behind it."""
    items = Item.objects.filter(project=project).values("pk")
    answered = Annotation.objects.filter(skipped=False).values("item_id")
    return {
        "gold": GoldLabel.objects.filter(project=project).exclude(item_id__in=items).count(),
        "review": Review.objects.filter(project=project).exclude(item_id__in=items).count(),
        "event": ReviewEvent.objects.filter(review__project=project)
        .exclude(review__item_id__in=items)
        .count(),
        "baseless gold": GoldLabel.objects.filter(project=project)
        .exclude(item_id__in=answered)
        .exclude(source=GoldSource.ADJUDICATED)
        .count(),
    }


NO_ORPHANS = {"gold": 0, "review": 0, "event": 0, "baseless gold": 0}


def test_deleting_answers_rebuilds_gold_and_drops_the_reviews_they_caused(project, crowd, reviewer):
    ann, bob, _ = crowd
    project = with_overlap(project, 2)
    first, second, third = list(Item.objects.filter(project=project).order_by("id")[:3])
    for item in (first, second, third):
        item.project = project
        label(item, ann, ["positive"])
        label(item, bob, ["neutral"])
    decided = review_of(third)
    review_decide(project=project, review_id=decided.pk, reviewer=reviewer, labels=["neutral"])

    annotations_delete(Annotation.objects.filter(item=first))  # every answer of the first
    annotations_delete(Annotation.objects.filter(item__in=[second, third], annotator=bob))

    assert gold_of(first) is None and review_of(first) is None
    gold = gold_of(second)
    assert (gold.labels, gold.source, gold.answers) == (["positive"], GoldSource.UNANIMOUS, 1)
    assert review_of(second) is None  # one answer left: nothing to disagree about
    gold = gold_of(third)
    assert (gold.labels, gold.source, gold.answers) == (["neutral"], GoldSource.ADJUDICATED, 1)
    assert orphans(project) == NO_ORPHANS


def test_deleting_items_leaves_no_gold_review_or_event_behind(project, crowd, reviewer):
    ann, bob, _ = crowd
    project = with_overlap(project, 2)
    items = list(Item.objects.filter(project=project).order_by("id")[:3])
    for item in items:
        item.project = project
        label(item, ann, ["positive"])
        label(item, bob, ["negative"])
    review = review_of(items[0])
    review_decide(project=project, review_id=review.pk, reviewer=reviewer, labels=["negative"])
    review_flag(item=items[1], user=ann)
    assert GoldLabel.objects.filter(project=project).count() == 3

    items_delete(Item.objects.filter(pk__in=[items[0].pk, items[1].pk]))

    assert orphans(project) == NO_ORPHANS
    assert list(GoldLabel.objects.filter(project=project).values_list("item_id", flat=True)) == [
        items[2].pk
    ]
    assert list(Review.objects.filter(project=project).values_list("item_id", flat=True)) == [
        items[2].pk
    ]
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (18, 1)


def test_gold_rebuild_restores_rows_lost_or_gone_stale(project, crowd):
    ann, bob, cy = crowd
    project = with_overlap(project, 3)
    items = list(Item.objects.filter(project=project).order_by("id")[:2])
    for item in items:
        item.project = project
        for who, name in zip(crowd, ["positive", "positive", "negative"], strict=True):
            label(item, who, [name])
    expected = sorted(
        GoldLabel.objects.filter(project=project).values_list("item_id", "labels", "source")
    )
    GoldLabel.objects.filter(item=items[0]).delete()
    GoldLabel.objects.filter(item=items[1]).update(labels=["neutral"], answers=9)

    gold_rebuild(project)

    assert (
        sorted(GoldLabel.objects.filter(project=project).values_list("item_id", "labels", "source"))
        == expected
    )
    assert GoldLabel.objects.get(item=items[1]).answers == 3
