"""A team's vectors as the learner's features (chosen by measured accuracy), and as the
similarity behind "more like this" and near duplicates."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from annotations.models import Item, Membership
from annotations.preannotations import parse_vector, vectors_save
from annotations.services import project_create
from curation import jobs, trainer
from curation.dataset_models import AnalysisRun, ItemDuplicate, ItemOutlier
from curation.feature_choice import feature_set_choose, feature_sets_measure
from curation.models import ModelVersion, ProjectTraining
from curation.vector_duplicates import candidate_pairs, random_planes, signatures
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "paper",
    "music",
    "green",
    "lamp",
    "table",
    "window",
    "chair",
    "orange",
]


def store_vectors(project, items, X: np.ndarray) -> None:
    vectors_save(project, [(i.pk, parse_vector(x.tolist())) for i, x in zip(items, X, strict=True)])


@pytest.fixture
def separable(db, data_dir):
    """80 texts of random words (the built-in features know nothing of the class) whose
    vectors separate the two classes; the first 40 labelled."""
    rng = np.random.default_rng(7)
    project = project_create(name="Vectors", classes=["left", "right"])
    texts = [" ".join(rng.choice(WORDS, 6)) + f" n{i}" for i in range(80)]
    items = add_text_items(project, texts)
    truth = ["left" if i % 2 == 0 else "right" for i in range(80)]
    centre = {"left": np.array([1.0, 0, 0, 0]), "right": np.array([0, 1.0, 0, 0])}
    X = np.array([centre[t] + 0.3 * rng.standard_normal(4) for t in truth])
    store_vectors(project, items, X)
    ProjectTraining.objects.create(project=project, eval_share=0.0, exploration=0.0)
    user = make_user("vec-annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    for item, name in zip(items[:40], truth[:40], strict=True):
        submit_handed_out(item=item, annotator=user, labels=[name], client_uuid=uuid.uuid4())
    project.refresh_from_db()
    return project, items, truth


def test_the_choice_is_the_feature_set_measured_best(separable):
    project, items, truth = separable
    scores = feature_sets_measure(project)

    assert scores["vectors"] > scores["builtin"] + 0.2  # random words vs separable vectors
    chosen = feature_set_choose(scores, "both")
    assert scores[chosen] == max(scores.values())
    assert chosen in ("vectors", "both")


def test_a_tie_keeps_the_set_in_use_and_nothing_measured_changes_nothing():
    assert feature_set_choose({"builtin": 0.9, "vectors": 0.9, "both": 0.8}, "vectors") == "vectors"
    assert feature_set_choose({"builtin": 0.9, "vectors": 0.95, "both": 0.8}, "both") == "vectors"
    assert feature_set_choose({"builtin": None, "vectors": None, "both": None}, "both") == "both"


def test_the_accuracy_estimate_records_the_choice_and_the_next_run_trains_on_it(separable):
    project, items, truth = separable
    first = trainer.train(project.pk).version
    assert first.featurizer_name == "text-hashing+item-vectors"  # both, until measured

    assert jobs._estimate(project.pk)
    measured = ModelVersion.objects.get(pk=first.pk).metrics
    cv = measured["feature_cv"]
    assert measured["feature_set"] == feature_set_choose(cv, "both")
    assert cv[measured["feature_set"]] == max(v for v in cv.values() if v is not None)
    training = ProjectTraining.objects.get(project=project)
    assert training.feature_set == measured["feature_set"]

    result = trainer.train(project.pk)  # no new label: retrains because the features changed
    if measured["feature_set"] != "both":
        assert result is not None
        names = {"vectors": "item-vectors", "builtin": "text-hashing"}
        assert result.version.featurizer_name == names[measured["feature_set"]]
    # Either way the model now ranks by the vectors: its guesses on the unlabelled half are right.
    head = Item.objects.filter(project=project, needs_annotation=True, suggestion__isnull=False)
    right = sum(h.suggestion["labels"] == [truth[int(h.external_id[1:])]] for h in head)
    assert head.count() >= 30 and right >= 0.9 * head.count()


def test_a_project_without_vectors_keeps_its_builtin_features(project, annotator, data_dir):
    from curation.feature_choice import feature_set_update

    assert feature_set_update(project) is None
    submit_handed_out(
        item=project.items.first(),
        annotator=annotator,
        labels=["positive"],
        client_uuid=uuid.uuid4(),
    )
    assert trainer.train(project.pk).version.featurizer_name == "text-hashing"


def run_analysis(project, kind) -> AnalysisRun:
    run = jobs.analysis_run_inline(project, kind)
    assert run.status == AnalysisRun.Status.DONE, run.error
    return run


def test_more_like_this_follows_the_vectors(db, data_dir):
    """Identical texts: only the vectors tell the items apart."""
    project = project_create(name="Alike", classes=["a", "b"])
    items = add_text_items(project, ["the same words"] * 30)
    rng = np.random.default_rng(1)
    directions = rng.standard_normal((3, 8))
    X = np.array([directions[i % 3] + 0.05 * rng.standard_normal(8) for i in range(30)])
    store_vectors(project, items, X)
    project.refresh_from_db()

    run_analysis(project, AnalysisRun.Kind.OUTLIERS)

    index = {item.pk: n for n, item in enumerate(items)}
    for row in ItemOutlier.objects.filter(project=project):
        me = index[row.item_id]
        neighbours = [index[pk] for pk, _ in row.neighbours[:5]]
        assert all(n % 3 == me % 3 for n in neighbours), (me, neighbours)
        assert row.neighbours[0][1] > 0.95


def test_near_duplicates_by_vector_cosine(db, data_dir):
    project = project_create(name="Twins", classes=["a", "b"])
    rng = np.random.default_rng(3)
    texts = [
        f"entirely different text number {i} " + " ".join(rng.choice(WORDS, 5)) for i in range(60)
    ]
    items = add_text_items(project, texts)
    X = rng.standard_normal((60, 32))
    X[1] = X[0] + 0.01 * rng.standard_normal(32)  # near twins by vector, not by text
    X[11] = X[10] * 3.0  # same direction: cosine 1
    X[21] = X[20] + 0.5 * rng.standard_normal(32)  # related but not a duplicate (cosine ~0.9)
    store_vectors(project, items, X)
    project.refresh_from_db()

    run_analysis(project, AnalysisRun.Kind.DUPLICATES)

    groups: dict[int, set[int]] = {}
    for row in ItemDuplicate.objects.filter(project=project):
        groups.setdefault(row.group_id, set()).add(items.index(Item.objects.get(pk=row.item_id)))
    assert sorted(map(sorted, groups.values())) == [[0, 1], [10, 11]]


def test_random_projection_lsh_finds_twins_among_many_in_bounded_candidates():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((20_000, 64)).astype(np.float32)
    twins = rng.choice(20_000, 200, replace=False)
    originals = rng.choice(np.setdiff1d(np.arange(20_000), twins), 200, replace=False)
    X[twins] = X[originals] + 0.1 * rng.standard_normal((200, 64)).astype(np.float32)  # cos ~0.995
    keys = signatures(X, random_planes(64))
    assert keys.nbytes == 20_000 * 32  # two bytes a table: all that is kept for every item

    found = candidate_pairs(keys)

    wanted = {tuple(sorted((int(a), int(b)))) for a, b in zip(originals, twins, strict=True)}
    assert len(wanted & found) == len(wanted)
    assert len(found) < 20 * len(X)  # nowhere near all pairs (2 × 10^8)
