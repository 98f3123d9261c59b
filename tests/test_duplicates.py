"""Duplicates and outliers (`curation.near_duplicates`, `curation.duplicates`,
`curation.outliers`): near duplicates of a few edited characters or words are found and
unrelated texts are not, groups with different gold labels go to review together and the
reviewer sees the group, the outlier score puts a planted outlier first, and the command and
API give the groups to those allowed to see them."""

from __future__ import annotations

import json
import random

import pytest
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from annotations.content_hash import normalise_text
from annotations.models import GoldLabel, GoldSource, Item, Review
from annotations.services import project_create
from curation import analysis_runs, jobs
from curation.dataset_models import AnalysisRun, DuplicateGroup, ItemDuplicate, ItemOutlier
from curation.duplicate_review import duplicates_to_review
from curation.near_duplicates import groups_of, image_near_duplicates, text_near_duplicates
from tests.conftest import PASSWORD, add_text_items

pytestmark = pytest.mark.usefixtures("data_dir")

_VOCABULARY = (
    "flight delayed gate crew bags seat refund ticket airport plane hours late cancelled "
    "service staff thanks great awful lost luggage wifi boarding pilot weather runway snack "
    "upgrade miles customer phone wait hold agent connection missed hotel voucher overnight "
    "rebooked friendly rude clean dirty legroom window aisle club lounge priority security "
)
WORDS = _VOCABULARY.split()


def sentence(rng: random.Random, words: int = 16) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def edited(rng: random.Random, text: str, edits: int) -> str:
    """`text` with `edits` small changes: a character changed, a word dropped or replaced."""
    words = text.split()
    for _ in range(edits):
        at = rng.randrange(len(words))
        kind = rng.randrange(3)
        if kind == 0:
            word = list(words[at])
            word[rng.randrange(len(word))] = "x"
            words[at] = "".join(word)
        elif kind == 1 and len(words) > 3:
            del words[at]
        else:
            words[at] = rng.choice(WORDS)
    return " ".join(words)


def test_texts_with_a_few_characters_or_words_edited_are_found_as_near_duplicates():
    rng = random.Random(3)
    bases = [sentence(rng, 18) for _ in range(60)]
    texts = list(bases)
    truth = {}
    for index in range(0, 60, 3):
        for edits in (1, 2, 3):
            truth[len(texts)] = index
            texts.append(edited(rng, bases[index], edits))
    pairs = text_near_duplicates([normalise_text(t) for t in texts])
    groups = groups_of(len(texts), pairs)
    group_of = {i: n for n, (members, _) in enumerate(groups) for i in members}
    found = sum(
        1
        for copy, base in truth.items()
        if copy in group_of and group_of.get(base) == group_of[copy]
    )
    assert found >= 0.9 * len(truth)
    # Every group holds one base and its copies only.
    for members, similarity in groups:
        assert len({truth.get(i, i) for i in members}) == 1
        assert all(0.5 <= s <= 1 for s in similarity.values())


def test_unrelated_texts_on_the_same_topic_make_no_groups():
    rng = random.Random(4)
    texts = [normalise_text(sentence(rng, rng.randint(8, 25))) for _ in range(400)]
    assert text_near_duplicates(texts) == []


def test_images_whose_perceptual_hashes_are_a_few_bits_apart_are_paired():
    rng = random.Random(5)
    hashes = [rng.getrandbits(64) for _ in range(300)]
    hashes.append(hashes[7] ^ (1 << 3) ^ (1 << 40))  # two bits changed
    hashes.append(hashes[9] ^ 0xFF)  # eight bits changed: too far
    pairs = image_near_duplicates(hashes, max_distance=6)
    assert [(a, b) for a, b, _ in pairs] == [(7, 300)]
    assert pairs[0][2] == pytest.approx(1 - 2 / 64)


@pytest.fixture
def dup_project(db):
    """Unrelated texts, two near-duplicate pairs, an exact pair (differing in case and spacing)
    and gold labels that conflict in one near pair."""
    rng = random.Random(6)
    project = project_create(name="Dups", classes=["pos", "neg"])
    texts = [sentence(rng, 16) for _ in range(40)]
    near_a = "the crew on my flight to boston was friendly and the snacks were great thanks"
    near_b = "the plane sat at the gate for three hours and nobody told us anything at all"
    texts += [
        near_a,
        near_a.replace("friendly", "frendly").replace("great", "good"),
        near_b,
        near_b.replace("three", "two"),
        "Lost my bag AGAIN on the connection",
        "  lost my   bag again on the CONNECTION ",
    ]
    items = add_text_items(project, texts)
    by_text = {item.text: item for item in items}
    now = timezone.now()
    for text, label in (
        (near_a, "pos"),
        (near_a.replace("friendly", "frendly").replace("great", "good"), "neg"),
        (near_b, "neg"),
        (near_b.replace("three", "two"), "neg"),
    ):
        GoldLabel.objects.create(
            item=by_text[text],
            project=project,
            labels=[label],
            source=GoldSource.MAJORITY,
            updated_at=now,
        )
    return project


def run_analysis(project, kind) -> AnalysisRun:
    run = analysis_runs.run_request(project=project, kind=kind)
    jobs.job_run({"type": jobs.ANALYSIS, "project_id": project.pk})
    run.refresh_from_db()
    assert run.status == AnalysisRun.Status.DONE, run.error
    return run


def groups_by_ids(project) -> list[tuple[list[str], str, bool]]:
    out = []
    for group in DuplicateGroup.objects.filter(project=project).order_by("pk"):
        ids = sorted(group.members.values_list("item__external_id", flat=True))
        out.append((ids, group.kind, group.conflicting))
    return sorted(out)


@pytest.mark.django_db(transaction=True)
def test_the_analysis_stores_exact_and_near_groups_and_marks_conflicting_gold_labels(dup_project):
    run = run_analysis(dup_project, AnalysisRun.Kind.DUPLICATES)
    assert groups_by_ids(dup_project) == [
        (["t40", "t41"], "near", True),
        (["t42", "t43"], "near", False),
        (["t44", "t45"], "exact", False),
    ]
    assert run.result["exact_groups"] == 1 and run.result["near_groups"] == 2
    assert run.result["conflicting"] == 1 and run.basis == 46
    assert ItemDuplicate.objects.get(item__external_id="t44").similarity == 1.0
    assert 0.5 <= ItemDuplicate.objects.get(item__external_id="t40").similarity < 1.0
    # Every item has its content hash now, and a second run replaces the groups.
    assert not Item.objects.filter(project=dup_project, content_hash__isnull=True).exists()
    run_analysis(dup_project, AnalysisRun.Kind.DUPLICATES)
    assert DuplicateGroup.objects.filter(project=dup_project).count() == 3


@pytest.mark.django_db(transaction=True)
def test_conflicting_groups_go_to_review_and_the_reviewer_sees_the_other_members(
    dup_project, client
):
    from annotations.models import Membership
    from tests.conftest import make_user

    reviewer = make_user("dup-rev")
    Membership.objects.create(project=dup_project, user=reviewer, role=Membership.Role.REVIEWER)
    run_analysis(dup_project, AnalysisRun.Kind.DUPLICATES)

    assert duplicates_to_review(project=dup_project, user=reviewer) == 2
    reviews = Review.objects.filter(project=dup_project).select_related("item")
    assert sorted(r.item.external_id for r in reviews) == ["t40", "t41"]
    assert all(r.reasons == [Review.Reason.DUPLICATE] for r in reviews)
    assert duplicates_to_review(project=dup_project, user=reviewer) == 0  # not twice

    review = reviews.get(item__external_id="t40")
    other = reviews.get(item__external_id="t41")
    client.login(username="dup-rev", password=PASSWORD)
    page = client.get(reverse("review_detail", args=[dup_project.pk, review.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "gold labels differ" in html
    assert reverse("review_detail", args=[dup_project.pk, other.pk]) in html
    assert '<span class="chip">neg</span>' in html


@pytest.mark.django_db(transaction=True)
def test_the_command_writes_one_json_line_per_group(dup_project, tmp_path):
    out = tmp_path / "groups.jsonl"
    call_command("find_duplicates", "Dups", "--output", str(out), "--no-progress")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(lines, key=lambda g: g["external_ids"]) == [
        {"external_ids": ["t40", "t41"], "kind": "near", "conflicting": True},
        {"external_ids": ["t42", "t43"], "kind": "near", "conflicting": False},
        {"external_ids": ["t44", "t45"], "kind": "exact", "conflicting": False},
    ]
    run = AnalysisRun.objects.get(project=dup_project, kind=AnalysisRun.Kind.DUPLICATES)
    assert run.status == AnalysisRun.Status.DONE


@pytest.mark.django_db(transaction=True)
def test_the_outlier_score_ranks_a_planted_outlier_first_and_neighbours_are_the_twins(db):
    rng = random.Random(8)
    project = project_create(name="Odd one", classes=["a", "b"])
    texts = [sentence(rng, 14) for _ in range(80)]
    texts.append(texts[5].replace(texts[5].split()[2], "miles", 1))  # t80: a near twin of t5
    texts.append("Quantenchromodynamik beschreibt die starke Wechselwirkung zwischen Quarks")
    add_text_items(project, texts)
    run = run_analysis(project, AnalysisRun.Kind.OUTLIERS)
    scores = list(ItemOutlier.objects.filter(project=project).order_by("-score"))
    assert len(scores) == 82 and run.result["exact"] is True
    assert scores[0].item.external_id == "t81"
    twin = ItemOutlier.objects.get(item__external_id="t80")
    nearest_id, similarity = twin.neighbours[0]
    assert Item.objects.get(pk=nearest_id).external_id == "t5" and similarity > 0.8
    assert len(twin.neighbours) == 10
    assert all(a[1] >= b[1] for a, b in zip(twin.neighbours[:-1], twin.neighbours[1:], strict=True))


def test_the_approximate_neighbour_search_agrees_with_the_exact_one_mostly(monkeypatch):
    import numpy as np
    from sklearn.preprocessing import normalize

    from curation import outliers

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    vectors = normalize(centres[rng.integers(0, 20, 3000)] + 0.3 * rng.normal(size=(3000, 16)))
    vectors = vectors.astype(np.float32)
    _, exact, _, was_exact = outliers.nearest(vectors, k=5)
    monkeypatch.setattr(outliers, "EXACT_MAX", 1000)
    _, approx, _, approximate = outliers.nearest(vectors, k=5)
    assert was_exact and not approximate
    overlap = np.mean([len(set(a) & set(e)) / 5 for a, e in zip(approx, exact, strict=True)])
    assert overlap > 0.8


@pytest.mark.django_db(transaction=True)
def test_the_duplicates_api_lists_groups_to_reviewers_and_sends_them_to_review(dup_project):
    from annotations.models import Membership
    from tests.conftest import make_user

    reviewer, annotator, outsider = make_user("r1"), make_user("a1"), make_user("o1")
    Membership.objects.create(project=dup_project, user=reviewer, role=Membership.Role.REVIEWER)
    Membership.objects.create(project=dup_project, user=annotator, role=Membership.Role.ANNOTATOR)
    run_analysis(dup_project, AnalysisRun.Kind.DUPLICATES)
    api = APIClient()
    url = f"/api/projects/{dup_project.pk}/duplicates/"

    api.force_authenticate(outsider)
    assert api.get(url).status_code == 404
    assert api.post(url + "review/", {}, format="json").status_code == 404
    api.force_authenticate(annotator)
    assert api.get(url).status_code == 403
    assert api.post(url + "review/", {}, format="json").status_code == 403
    api.force_authenticate(None)
    assert api.get(url).status_code in (401, 403)

    api.force_authenticate(reviewer)
    body = api.get(url, {"page_size": 2}).json()
    assert len(body["results"]) == 2 and body["next"]
    rest = api.get(body["next"]).json()
    assert len(body["results"]) + len(rest["results"]) == 3
    conflicting = api.get(url, {"conflicting": "1"}).json()["results"]
    assert len(conflicting) == 1
    members = conflicting[0]["members"]
    assert [(m["external_id"], m["gold"]) for m in members] == [("t40", ["pos"]), ("t41", ["neg"])]
    assert api.get(url, {"conflicting": "maybe"}).status_code == 400

    sent = api.post(url + "review/", {"groups": [conflicting[0]["id"]]}, format="json")
    assert sent.status_code == 200 and sent.json() == {"sent_to_review": 2}
    assert Review.objects.filter(project=dup_project).count() == 2


@pytest.mark.django_db(transaction=True)
def test_deleting_items_recounts_their_duplicate_groups_and_drops_those_left_with_one(db):
    from annotations.bulk import Selection, items_delete_recorded

    rng = random.Random(9)
    project = project_create(name="Shrinking", classes=["pos", "neg"])
    base_a = "the crew on my flight to boston was friendly and the snacks were great thanks"
    base_c = "the plane sat at the gate for three hours and nobody told us anything at all"
    named = {
        "a0": base_a,
        "a1": base_a.replace("friendly", "frendly"),
        "a2": base_a.replace("great", "good"),
        "b0": "Lost my bag AGAIN on the connection",
        "b1": "lost my bag again on the connection",
        "c0": base_c,
        "c0-copy": base_c.upper(),
        "c1": base_c.replace("three", "two"),
    }
    add_text_items(project, [sentence(rng, 16) for _ in range(30)], prefix="u")
    items = {}
    for external_id, text in named.items():
        (items[external_id],) = add_text_items(project, [text], prefix=external_id + "#")
        Item.objects.filter(pk=items[external_id].pk).update(external_id=external_id)
    now = timezone.now()
    for external_id, label in (("a0", "pos"), ("a1", "pos"), ("a2", "neg"), ("c0", "pos")):
        GoldLabel.objects.create(
            item=items[external_id],
            project=project,
            labels=[label],
            source=GoldSource.MAJORITY,
            updated_at=now,
        )
    run_analysis(project, AnalysisRun.Kind.DUPLICATES)
    assert groups_by_ids(project) == [
        (["a0", "a1", "a2"], "near", True),
        (["b0", "b1"], "exact", False),
        (["c0", "c0-copy", "c1"], "near", False),
    ]

    gone = [items[name].pk for name in ("a2", "b1", "c1")]
    items_delete_recorded(project=project, user=None, selection=Selection.of_ids(gone))

    # a: no longer conflicting; b: one member left, no group; c: the exact copies remain.
    assert groups_by_ids(project) == [
        (["a0", "a1"], "near", False),
        (["c0", "c0-copy"], "exact", False),
    ]
    sizes = sorted(DuplicateGroup.objects.filter(project=project).values_list("size", flat=True))
    assert sizes == [2, 2]
    assert not ItemDuplicate.objects.filter(item=items["b0"]).exists()
    assert duplicates_to_review(project=project, user=None) == 0
