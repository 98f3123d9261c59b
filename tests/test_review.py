"""The review queue: claims, decisions and their log, reopening and flags, the model's
disputes, and two reviewers working the same queue at the same moment."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from annotations.gold import reviews_for_model_disagreement
from annotations.models import (
    GoldLabel,
    GoldSource,
    Item,
    Membership,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import (
    ReviewConflict,
    review_candidates,
    review_decide,
    review_flag,
    review_next,
    review_release,
    review_renew,
    review_reopen,
)
from annotations.services import project_create
from curation.featurizers import featurizer_for
from curation.models import ProjectTraining
from curation.services import current_model, train_project_once
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def label(item: Item, user, labels: list[str]) -> None:
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


def member(project: Project, username: str, role: str = Membership.Role.ANNOTATOR):
    user = make_user(username)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def items_of(project: Project, n: int) -> list[Item]:
    items = list(Item.objects.filter(project=project).order_by("id")[:n])
    for item in items:
        item.project = project
    return items


def flagged(project: Project, user, n: int) -> list[Review]:
    """Reviews of the project's first `n` items, flagged one after another (oldest first)."""
    return [review_flag(item=item, user=user) for item in items_of(project, n)]


@pytest.fixture
def crowd(project) -> list:
    return [member(project, name) for name in ("ann", "bob", "cy")]


@pytest.fixture
def second_reviewer(project):
    return member(project, "rhea", Membership.Role.REVIEWER)


@pytest.fixture
def disputed(project, crowd) -> Review:
    """A complete item (overlap 3) its three annotators answered three different ways."""
    Project.objects.filter(pk=project.pk).update(overlap=3)
    project.refresh_from_db()
    (item,) = items_of(project, 1)
    for who, name in zip(crowd, ["positive", "negative", "neutral"], strict=True):
        label(item, who, [name])
    return Review.objects.get(item=item)


# --- claims --------------------------------------------------------------------------------------


def test_the_oldest_open_review_is_claimed_first_and_two_reviewers_get_different_ones(
    project, annotator, reviewer, second_reviewer
):
    first, second, third = flagged(project, annotator, 3)

    mine = review_next(project=project, reviewer=reviewer)
    theirs = review_next(project=project, reviewer=second_reviewer)

    assert (mine, theirs) == (first, second)
    first.refresh_from_db()
    assert first.claimed_by == reviewer and first.claimed_until > timezone.now()


def test_a_reviewer_gets_their_own_live_claim_back_before_anything_else(
    project, annotator, reviewer
):
    first, second = flagged(project, annotator, 2)
    assert review_next(project=project, reviewer=reviewer, exclude=[first.pk]) == second

    assert review_next(project=project, reviewer=reviewer) == second
    assert review_next(project=project, reviewer=reviewer) == second


def test_an_expired_claim_is_free_for_another_reviewer(
    project, annotator, reviewer, second_reviewer
):
    first, second = flagged(project, annotator, 2)
    review_next(project=project, reviewer=reviewer)
    assert review_next(project=project, reviewer=second_reviewer) == second

    Review.objects.filter(pk=first.pk).update(claimed_until=timezone.now() - timedelta(seconds=1))
    third_reviewer = member(project, "remy", Membership.Role.REVIEWER)

    assert review_next(project=project, reviewer=third_reviewer) == first
    first.refresh_from_db()
    assert first.claimed_by == third_reviewer


def test_a_released_review_goes_back_to_the_queue_and_a_renewed_claim_lasts_longer(
    project, annotator, reviewer, second_reviewer
):
    (only,) = flagged(project, annotator, 1)
    review_next(project=project, reviewer=reviewer)
    Review.objects.filter(pk=only.pk).update(claimed_until=timezone.now() + timedelta(seconds=5))
    assert review_next(project=project, reviewer=second_reviewer) is None

    assert review_renew(project=project, reviewer=reviewer) == 1
    only.refresh_from_db()
    assert only.claimed_until > timezone.now() + timedelta(seconds=30)

    review_release(review=only, reviewer=second_reviewer)  # not theirs: changes nothing
    assert review_next(project=project, reviewer=second_reviewer) is None
    review_release(review=only, reviewer=reviewer)
    assert review_next(project=project, reviewer=second_reviewer) == only


def test_decided_reviews_and_other_projects_reviews_are_not_claimed(
    project, other_project, annotator, reviewer
):
    (decided,) = flagged(project, annotator, 1)
    review_decide(project=project, review_id=decided.pk, reviewer=reviewer, labels=["neutral"])
    (elsewhere,) = Item.objects.filter(project=other_project)
    review_flag(item=elsewhere, user=make_user("olga"))

    assert review_next(project=project, reviewer=reviewer) is None


# --- decisions -----------------------------------------------------------------------------------


def test_a_decision_records_who_when_labels_comment_the_candidates_and_the_one_chosen(
    project, disputed, reviewer
):
    assert review_next(project=project, reviewer=reviewer) == disputed
    before = timezone.now()

    review_decide(
        project=project,
        review_id=disputed.pk,
        reviewer=reviewer,
        labels=["negative"],
        comment="  a complaint about delivery  ",
    )

    review = Review.objects.get(pk=disputed.pk)
    assert review.status == Review.Status.DECIDED
    assert (review.labels, review.decided_by, review.comment) == (
        ["negative"],
        reviewer,
        "a complaint about delivery",
    )
    assert before <= review.decided_at <= timezone.now()
    assert review.claimed_by is None and review.claimed_until is None
    (event,) = ReviewEvent.objects.filter(review=review)
    assert (event.actor, event.action, event.labels, event.chosen) == (
        reviewer,
        ReviewEvent.Action.DECIDE,
        ["negative"],
        "annotator:bob",
    )
    assert event.comment == "a complaint about delivery"
    assert event.candidates == [
        {"source": "annotator:ann", "who": "ann", "labels": ["positive"], "confidence": None},
        {"source": "annotator:bob", "who": "bob", "labels": ["negative"], "confidence": None},
        {"source": "annotator:cy", "who": "cy", "labels": ["neutral"], "confidence": None},
    ]
    gold = GoldLabel.objects.get(item_id=review.item_id)
    assert (gold.labels, gold.source) == (["negative"], GoldSource.ADJUDICATED)
    assert review_next(project=project, reviewer=reviewer) is None


def test_a_label_no_candidate_gave_is_recorded_as_new_and_a_shared_one_names_everyone(
    project, crowd, reviewer
):
    ann, bob, _ = crowd
    first, second = items_of(project, 2)
    label(first, ann, ["positive"])
    label(second, ann, ["negative"])
    new = review_flag(item=first, user=ann)
    shared = review_flag(item=second, user=ann)
    reviews_for_model_disagreement(project, {second.pk: (["negative"], 0.97)})
    xy = project_create(name="Two classes", classes=["x", "y"], overlap=3)
    (item,) = add_text_items(xy, ["one text"])
    for who, name in zip(crowd, ["x", "y", "y"], strict=True):
        label(item, who, [name])
    majority = review_flag(item=item, user=bob)

    review_decide(project=project, review_id=new.pk, reviewer=reviewer, labels=["neutral"])
    review_decide(project=project, review_id=shared.pk, reviewer=reviewer, labels=["negative"])
    review_decide(project=xy, review_id=majority.pk, reviewer=reviewer, labels=["y"])

    chosen = dict(ReviewEvent.objects.filter(action="decide").values_list("review_id", "chosen"))
    assert chosen == {
        new.pk: "new",
        shared.pk: "annotator:ann,model",
        majority.pk: "annotator:bob,annotator:cy",
    }
    model = ReviewEvent.objects.get(review=shared, action="decide").candidates[-1]
    assert model == {"source": "model", "who": "model", "labels": ["negative"], "confidence": 0.97}


def test_a_second_decision_is_refused_naming_who_decided_first_and_when(
    project, disputed, reviewer, second_reviewer
):
    review_decide(project=project, review_id=disputed.pk, reviewer=reviewer, labels=["neutral"])
    decided_at = timezone.localtime(Review.objects.get(pk=disputed.pk).decided_at)

    with pytest.raises(ReviewConflict) as refused:
        review_decide(
            project=project, review_id=disputed.pk, reviewer=second_reviewer, labels=["positive"]
        )

    message = str(refused.value)
    assert "Already decided by rev" in message
    assert f"{decided_at:%Y-%m-%d %H:%M:%S}" in message and "neutral" in message
    review = Review.objects.get(pk=disputed.pk)
    assert (review.labels, review.decided_by) == (["neutral"], reviewer)
    assert ReviewEvent.objects.filter(review=review, action="decide").count() == 1


def test_a_review_another_reviewer_holds_cannot_be_decided(
    project, disputed, reviewer, second_reviewer
):
    review_next(project=project, reviewer=reviewer)

    with pytest.raises(ReviewConflict, match="rev is reviewing this item"):
        review_decide(
            project=project, review_id=disputed.pk, reviewer=second_reviewer, labels=["positive"]
        )

    assert Review.objects.get(pk=disputed.pk).status == Review.Status.OPEN
    assert not ReviewEvent.objects.filter(review=disputed).exists()


def test_a_resent_decision_returns_the_review_without_a_second_event(project, disputed, reviewer):
    sent = uuid.uuid4()
    decide = {"project": project, "review_id": disputed.pk, "reviewer": reviewer}
    review_decide(**decide, labels=["neutral"], client_uuid=sent)

    again = review_decide(**decide, labels=["neutral"], client_uuid=sent)

    assert again.status == Review.Status.DECIDED and again.labels == ["neutral"]
    assert ReviewEvent.objects.filter(review=disputed).count() == 1
    other = review_flag(item=items_of(project, 2)[1], user=reviewer)
    with pytest.raises(ValidationError, match="already used"):
        review_decide(
            project=project,
            review_id=other.pk,
            reviewer=reviewer,
            labels=["neutral"],
            client_uuid=sent,
        )


def test_a_decision_with_a_label_outside_the_schema_is_refused(project, disputed, reviewer):
    with pytest.raises(ValidationError, match="Unknown label"):
        review_decide(project=project, review_id=disputed.pk, reviewer=reviewer, labels=["meh"])
    assert Review.objects.get(pk=disputed.pk).status == Review.Status.OPEN


# --- reopening and flags -------------------------------------------------------------------------


def test_reopening_is_recorded_and_puts_the_item_back_in_the_queue(
    project, disputed, reviewer, second_reviewer
):
    review_decide(project=project, review_id=disputed.pk, reviewer=reviewer, labels=["neutral"])

    review_reopen(project=project, review_id=disputed.pk, user=second_reviewer, comment=" typo ")

    review = Review.objects.get(pk=disputed.pk)
    assert review.status == Review.Status.OPEN
    assert (review.labels, review.decided_by, review.decided_at) == (None, None, None)
    reopen = ReviewEvent.objects.get(review=review, action=ReviewEvent.Action.REOPEN)
    assert (reopen.actor, reopen.labels, reopen.comment) == (second_reviewer, ["neutral"], "typo")
    assert GoldLabel.objects.get(item_id=review.item_id).labels is None  # a three-way split
    assert review_next(project=project, reviewer=second_reviewer) == review
    with pytest.raises(ReviewConflict, match="not decided"):
        review_reopen(project=project, review_id=review.pk, user=reviewer)


def test_a_flag_opens_a_review_with_its_note_and_an_event(project, annotator):
    (item,) = items_of(project, 1)
    label(item, annotator, ["positive"])

    review = review_flag(item=item, user=annotator, note="  not English  ")

    review.refresh_from_db()
    assert review.status == Review.Status.OPEN and review.reasons == [Review.Reason.FLAG]
    assert (review.flagged_by, review.flag_note) == (annotator, "not English")
    (event,) = ReviewEvent.objects.filter(review=review)
    assert (event.action, event.actor, event.comment) == ("flag", annotator, "not English")


def test_flagging_a_decided_item_reopens_it_and_its_gold_label_reverts(
    project, disputed, reviewer, crowd
):
    review_decide(project=project, review_id=disputed.pk, reviewer=reviewer, labels=["neutral"])
    item = Item.objects.get(pk=disputed.item_id)
    item.project = project

    review_flag(item=item, user=crowd[0], note="the reviewer missed the sarcasm")

    review = Review.objects.get(pk=disputed.pk)
    assert review.status == Review.Status.OPEN and review.labels is None
    assert review.reasons == [Review.Reason.DISAGREEMENT, Review.Reason.FLAG]
    gold = GoldLabel.objects.get(item=item)
    assert (gold.labels, gold.source) == (None, GoldSource.TIE)
    actions = list(ReviewEvent.objects.filter(review=review).order_by("id").values_list("action"))
    assert actions == [("decide",), ("flag",)]
    assert review_next(project=project, reviewer=reviewer) == review


# --- the model's disputes ------------------------------------------------------------------------

WORDS = {
    "positive": "good great excellent wonderful superb lovely",
    "negative": "bad awful terrible horrible dreadful poor",
    "neutral": "okay average fine ordinary plain middling",
}


@pytest.fixture
def warm(db, data_dir) -> tuple[Project, dict[str, list[Item]], object]:
    """A project of three clearly separable classes whose model has learned 4 items of each."""
    project = project_create(name="Separable", classes=list(WORDS))
    ProjectTraining.objects.create(project=project, exploration=0.0, eval_share=0.0)
    by_class = {}
    for name, words in WORDS.items():
        vocab = words.split()
        texts = [f"{vocab[i % 6]} {vocab[(i + 2) % 6]} item {i}" for i in range(10)]
        by_class[name] = add_text_items(project, texts, prefix=name)
    user = make_user("labeller")
    for name, items in by_class.items():
        for item in items[:4]:
            label(item, user, [name])
    assert train_project_once(project).metrics["cold"] is False
    return project, by_class, user


def model_guess(project: Project, item: Item) -> tuple[str, float]:
    learner = current_model(project)
    p = learner.predict_proba(featurizer_for("text").transform([item.text]))[0]
    return learner.classes[int(p.argmax())], float(p.max())


def test_an_answer_the_warm_model_confidently_contradicts_goes_to_review_with_its_guess(warm):
    project, by_class, user = warm
    Project.objects.filter(pk=project.pk).update(review_model_confidence=0.5)
    project.refresh_from_db()
    (item,) = add_text_items(project, [WORDS["positive"]], prefix="strong")
    guess, confidence = model_guess(project, item)
    assert guess == "positive" and confidence >= 0.55  # what the test relies on (~0.6)
    agreeing = by_class["negative"][7]

    label(item, user, ["negative"])
    label(agreeing, user, ["negative"])
    train_project_once(project)

    review = Review.objects.get(item=item)
    assert review.reasons == [Review.Reason.MODEL] and review.status == Review.Status.OPEN
    assert review.model_labels == ["positive"]
    assert review.model_confidence == pytest.approx(confidence, abs=1e-3)
    assert not Review.objects.filter(item=agreeing).exists()
    candidates = [c.as_dict() for c in review_candidates(review)]
    assert candidates == [
        {
            "source": "annotator:labeller",
            "who": "labeller",
            "labels": ["negative"],
            "confidence": None,
        },
        {
            "source": "model",
            "who": "model",
            "labels": ["positive"],
            "confidence": review.model_confidence,
        },
    ]


def test_no_model_review_when_the_project_turns_it_off(warm):
    project, by_class, user = warm
    Project.objects.filter(pk=project.pk).update(review_model_confidence=None)
    project.refresh_from_db()
    (item,) = add_text_items(project, [WORDS["positive"]], prefix="strong")
    assert model_guess(project, item)[1] >= 0.55

    label(item, user, ["negative"])
    assert train_project_once(project) is not None

    assert not Review.objects.filter(project=project).exists()


def test_a_model_dispute_leaves_a_decided_item_decided(project, disputed, reviewer):
    review_decide(project=project, review_id=disputed.pk, reviewer=reviewer, labels=["neutral"])

    opened = reviews_for_model_disagreement(project, {disputed.item_id: (["positive"], 0.99)})

    review = Review.objects.get(pk=disputed.pk)
    assert opened == 0 and review.status == Review.Status.DECIDED
    assert review.reasons == [Review.Reason.DISAGREEMENT] and review.model_labels == []


# --- two reviewers at the same moment (PostgreSQL) -----------------------------------------------


def run_together(*jobs) -> list[BaseException]:
    """Run each job in its own thread with its own connection; the errors they raised."""
    errors: list[BaseException] = []

    def run(job) -> None:
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a reviewer thread hung"
    return errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_reviewers_claiming_at_the_same_moment_never_get_the_same_review(
    project, annotator, reviewer, second_reviewer
):
    rounds = 10  # the project has 20 items
    reviews = flagged(project, annotator, 2 * rounds)
    barrier = threading.Barrier(2)
    claimed: dict[int, list[int | None]] = {reviewer.pk: [], second_reviewer.pk: []}

    def work(user) -> None:
        for _ in range(rounds):
            barrier.wait(timeout=30)
            review = review_next(project=project, reviewer=user)
            claimed[user.pk].append(review.pk if review else None)
            if review is not None:
                review_decide(
                    project=project, review_id=review.pk, reviewer=user, labels=["neutral"]
                )

    errors = run_together(lambda: work(reviewer), lambda: work(second_reviewer))

    assert not errors, errors
    mine, theirs = claimed[reviewer.pk], claimed[second_reviewer.pk]
    assert None not in mine and None not in theirs, f"{mine} {theirs}"
    assert all(a != b for a, b in zip(mine, theirs, strict=True)), "the same review twice"
    assert sorted(mine + theirs) == sorted(r.pk for r in reviews)
    assert ReviewEvent.objects.filter(action="decide").count() == 2 * rounds


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_reviewers_deciding_the_same_review_at_once_make_one_decision(
    project, annotator, reviewer, second_reviewer
):
    reviews = flagged(project, annotator, 8)
    names = {reviewer.pk: "rev", second_reviewer.pk: "rhea"}
    barrier = threading.Barrier(2)
    outcomes: list[tuple[int, int, str]] = []  # (review, reviewer, "ok" or the refusal)

    def work(user, choice: str) -> None:
        for review in reviews:
            barrier.wait(timeout=30)
            try:
                review_decide(project=project, review_id=review.pk, reviewer=user, labels=[choice])
                outcomes.append((review.pk, user.pk, "ok"))
            except ReviewConflict as exc:
                outcomes.append((review.pk, user.pk, str(exc)))

    errors = run_together(
        lambda: work(reviewer, "positive"), lambda: work(second_reviewer, "negative")
    )

    assert not errors, errors
    for review in reviews:
        results = {who: outcome for pk, who, outcome in outcomes if pk == review.pk}
        winners = [who for who, outcome in results.items() if outcome == "ok"]
        assert len(winners) == 1, results
        (loser,) = set(results) - set(winners)
        assert results[loser].startswith(f"Already decided by {names[winners[0]]} at "), results
        stored = Review.objects.get(pk=review.pk)
        assert stored.decided_by_id == winners[0]
        assert stored.labels == [{reviewer.pk: "positive"}.get(winners[0], "negative")]
        assert ReviewEvent.objects.filter(review=review, action="decide").count() == 1


def test_a_reviewer_gets_items_they_did_not_answer_themselves_first(
    project, reviewer, project_admin
):
    items = list(project.items.order_by("id")[:2])
    for item in items:
        item.project = project
    review_flag(item=items[0], user=reviewer)  # older
    review_flag(item=items[1], user=reviewer)
    submit_handed_out(
        item=items[0], annotator=reviewer, labels=["positive"], client_uuid=uuid.uuid4()
    )

    first = review_next(project=project, reviewer=reviewer)

    assert first.item_id == items[1].pk
    assert review_next(project=project, reviewer=project_admin).item_id == items[0].pk
