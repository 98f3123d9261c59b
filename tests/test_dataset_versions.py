"""Dataset versions: immutable snapshots with a stable content hash, checked files, stable
splits, diffs, automatic versions, the model measured on each, and the commands."""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter

import pytest
from django.core.management import CommandError, call_command

from annotations.models import Item
from annotations.review import review_decide, review_flag
from annotations.services import items_delete
from curation import jobs, splits
from curation.dataset_versions import (
    VersionError,
    VersionFileError,
    labelled_gold,
    snapshot_due,
    version_create,
    version_open,
    version_request,
)
from curation.models import ProjectTraining
from curation.version_diff import diff_compute, diff_of
from curation.version_models import DatasetVersion
from tests.conftest import add_text_items, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords", "data_dir")


def label(item: Item, user, labels: list[str]) -> None:
    submit_handed_out(item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4())


def set_training(project, **fields) -> ProjectTraining:
    row, _ = ProjectTraining.objects.update_or_create(project=project, defaults=fields)
    return row


def rows_of(version: DatasetVersion) -> list[dict]:
    _, rows = version_open(version)
    return list(rows())


def by_external_id(version: DatasetVersion) -> dict[str, dict]:
    return {row["external_id"]: row for row in rows_of(version)}


@pytest.fixture
def labelled_half(project, annotator):
    """The first 10 of the project's 20 reviews labelled, classes in turn."""
    classes = ["positive", "negative", "neutral"]
    items = list(Item.objects.filter(project=project).order_by("id"))
    for i, item in enumerate(items[:10]):
        label(item, annotator, [classes[i % 3]])
    return items


# --- What a version holds ----------------------------------------------------------------------


def test_a_version_holds_items_gold_labels_schema_answers_and_splits(
    project, annotator, labelled_half
):
    version = version_create(project, name="first", note="ten labels", author=annotator)
    assert version.status == DatasetVersion.Status.READY
    assert (version.name, version.note, version.author, version.number) == (
        "first",
        "ten labels",
        annotator,
        1,
    )
    header, rows = version_open(version)
    assert [c["name"] for c in header["classes"]] == ["positive", "negative", "neutral"]
    assert header["project"]["name"] == "Sentiment" and header["items"] == 20
    rows = list(rows())
    assert [r["item_id"] for r in rows] == sorted(i.pk for i in labelled_half)
    first = rows[0]
    assert first["text"] == "review number 0"
    assert first["gold"] == {"labels": ["positive"], "source": "unanimous", "agreement": 1.0}
    assert [a["annotator"] for a in first["answers"]] == ["annie"]
    assert {r["split"] for r in rows} <= set(splits.SPLITS)
    assert all(r["gold"] is None and r["answers"] == [] for r in rows[10:])
    assert (version.items, version.labelled, version.answers) == (20, 10, 10)
    assert version.class_counts == {"negative": 3, "neutral": 3, "positive": 4}
    assert sum(s["labelled"] for s in version.split_counts.values()) == 10
    assert len(version.content_hash) == 64 and version.file_sha256 != version.content_hash


def test_later_labels_do_not_change_a_version(project, annotator, labelled_half):
    version = version_create(project)
    before = rows_of(version)
    file_bytes = version.path.read_bytes()
    for item in labelled_half[10:15]:
        label(item, annotator, ["neutral"])
    item = labelled_half[0]
    label(item, annotator, ["negative"])  # an edit of a labelled item
    version.refresh_from_db()
    assert rows_of(version) == before
    assert version.path.read_bytes() == file_bytes
    later = version_create(project)
    assert later.content_hash != version.content_hash
    assert later.labelled == 15 and version.labelled == 10
    assert by_external_id(later)["t0"]["gold"]["labels"] == ["negative"]


def test_the_content_hash_is_the_same_for_the_same_data_whatever_the_name(
    project, annotator, labelled_half
):
    first = version_create(project, name="a", note="one")
    second = version_create(project, name="b", note="two", author=annotator)
    assert first.content_hash == second.content_hash
    assert first.file_sha256 == second.file_sha256 and first.file_name == second.file_name
    label(labelled_half[12], annotator, ["positive"])
    assert version_create(project).content_hash != first.content_hash


def test_the_content_hash_is_the_sha256_of_the_uncompressed_lines(project, labelled_half):
    import hashlib

    version = version_create(project)
    with gzip.open(version.path, "rb") as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == version.content_hash


def test_a_damaged_version_file_is_refused_never_read(project, labelled_half):
    version = version_create(project)
    data = bytearray(version.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    version.path.write_bytes(bytes(data))
    with pytest.raises(VersionFileError, match="does not match its checksum"):
        version_open(version)
    version.path.unlink()
    with pytest.raises(VersionFileError, match="missing"):
        version_open(version)


def test_a_file_with_the_right_checksum_but_not_a_version_is_refused(project, labelled_half):
    import hashlib

    version = version_create(project)
    forged = gzip.compress(b'{"format": "something else"}\n', mtime=0)
    version.path.write_bytes(forged)
    version.file_sha256 = hashlib.sha256(forged).hexdigest()
    with pytest.raises(VersionFileError, match="not a version file"):
        version_open(version)


def test_an_incomplete_item_has_no_final_label_in_a_version(project, annotator, reviewer):
    from annotations.services import project_set_overlap

    project_set_overlap(project, 2)
    item = Item.objects.get(project=project, external_id="t3")
    label(item, annotator, ["positive"])
    row = by_external_id(version_create(project))["t3"]
    assert row["status"] == "incomplete" and row["gold"]["labels"] is None
    assert labelled_gold(row) is None


def test_version_names_are_unique_in_a_project_and_checked(project, labelled_half):
    version_create(project, name="release-1.0")
    with pytest.raises(VersionError, match="taken"):
        version_create(project, name="release-1.0")
    with pytest.raises(VersionError, match="letters, digits"):
        version_request(project, name="../etc/passwd")
    assert DatasetVersion.objects.filter(project=project).count() == 1
    assert version_create(project).name == "v2"


# --- Splits ------------------------------------------------------------------------------------


def test_the_split_follows_the_hash_of_seed_and_external_id(project, labelled_half):
    training = set_training(project)
    version = version_create(project)
    rule = version.split_rule
    assert rule["seed"] == training.split_seed
    for row in rows_of(version):
        assert row["split"] == splits.by_hash(rule, row["external_id"])


def test_items_keep_their_split_across_versions_and_new_items_move_none(
    project, annotator, labelled_half
):
    set_training(project, split_validation=0.2, split_test=0.3)
    first = by_external_id(version_create(project))
    add_text_items(project, [f"a later review {i}" for i in range(200)], prefix="n")
    for item in labelled_half[10:]:
        label(item, annotator, ["positive"])
    second = by_external_id(version_create(project))
    assert all(second[eid]["split"] == row["split"] for eid, row in first.items())
    shares = Counter(row["split"] for row in second.values())
    assert 0.2 < shares["test"] / len(second) < 0.4  # 220 items: the hash spreads them
    assert 0.1 < shares["validation"] / len(second) < 0.3


def test_two_projects_split_the_same_ids_differently(db):
    from annotations.services import project_create

    a = project_create(name="A", classes=["x", "y"])
    b = project_create(name="B", classes=["x", "y"])
    set_training(a), set_training(b)
    seeds = ProjectTraining.objects.filter(project__in=[a, b]).values_list("split_seed", flat=True)
    assert len(set(seeds)) == 2


def test_a_stratified_split_keeps_each_class_share_and_stays_put(project, annotator):
    set_training(project, split_validation=0.0, split_test=0.25, split_stratified=True)
    add_text_items(project, [f"more {i}" for i in range(100)], prefix="m")
    items = list(Item.objects.filter(project=project).order_by("id"))
    for i, item in enumerate(items[:80]):
        label(item, annotator, ["positive" if i % 4 else "negative"])  # 60 / 20
    first = version_create(project)
    per_class = first.split_counts["test"]["classes"]
    assert per_class == {"negative": 5, "positive": 15}
    for i, item in enumerate(items[80:]):
        label(item, annotator, ["neutral" if i % 2 else "negative"])
    second = version_create(project)
    earlier = by_external_id(first)
    later = by_external_id(second)
    kept = [eid for eid, row in earlier.items() if row["gold"]]  # the rest had no class yet
    assert len(kept) == 80 and all(later[eid]["split"] == earlier[eid]["split"] for eid in kept)
    assert second.split_counts["test"]["classes"] == {
        "negative": 5 + 5,  # 20 + 20 negatives in all: 10 in test
        "neutral": 5,
        "positive": 15,
    }


def test_stratified_splits_are_deterministic():
    rule = splits.split_rule(seed="s", validation=0.1, test=0.2, stratified=True)
    labelled = [(f"id{i}", "a" if i % 3 else "b") for i in range(300)]
    first = splits.stratified_splits(rule, labelled, {})
    assert first == splits.stratified_splits(rule, list(reversed(labelled)), {})
    counts = Counter((key, first[eid]) for eid, key in labelled)
    assert counts[("a", "test")] == 40 and counts[("b", "test")] == 20
    assert counts[("a", "validation")] == 20 and counts[("b", "validation")] == 10


# --- Diffs -------------------------------------------------------------------------------------


def test_a_diff_lists_added_removed_relabelled_and_newly_labelled_items(
    project, annotator, reviewer, labelled_half
):
    a = version_create(project, name="a")
    # t0 positive -> negative by a reviewer's decision; t1 negative -> positive too.
    for eid, to in (("t0", ["negative"]), ("t1", ["positive"])):
        item = Item.objects.get(project=project, external_id=eid)
        review = review_flag(item=item, user=reviewer, note="check")
        review_decide(
            project=project,
            review_id=review.pk,
            reviewer=reviewer,
            labels=to,
            client_uuid=uuid.uuid4(),
        )
    for item in labelled_half[10:13]:  # three newly labelled
        label(item, annotator, ["neutral"])
    items_delete(Item.objects.filter(project=project, external_id__in=["t2", "t19"]))
    added = add_text_items(project, ["brand new", "another new"], prefix="z")
    b = version_create(project, name="b")
    diff = diff_of(a, b)
    assert (diff["from"], diff["to"]) == ("a", "b")
    assert diff["summary"] == {
        "added": 2,
        "removed": 2,
        "relabelled": 2,
        "labelled": 3,
        "unlabelled": 0,
        "unchanged": 13,
    }
    assert {(p["from"], p["to"], p["items"]) for p in diff["pairs"]} == {
        ("positive", "negative", 1),
        ("negative", "positive", 1),
        ("(none)", "neutral", 3),
    }
    changes = {c["external_id"]: c for c in diff["changes"]}
    assert changes["t2"] == {
        "change": "removed",
        "item_id": labelled_half[2].pk,
        "external_id": "t2",
        "from": "neutral",
        "to": "(none)",
    }
    assert {changes[i.external_id]["change"] for i in added} == {"added"}
    assert diff_of(a, b) == diff  # read back from where it was kept
    reverse = diff_compute(b, a)["summary"]
    assert (reverse["added"], reverse["removed"], reverse["unlabelled"]) == (2, 2, 3)


def test_a_diff_of_a_version_with_itself_is_empty(project, labelled_half):
    a = version_create(project)
    summary = diff_compute(a, a)["summary"]
    assert summary == {**dict.fromkeys(summary, 0), "unchanged": 20}


# --- Automatic versions and the worker ---------------------------------------------------------


def test_a_version_every_n_gold_labels(project, annotator):
    set_training(project, snapshot_every=4)
    items = list(Item.objects.filter(project=project).order_by("id"))
    for item in items[:3]:
        label(item, annotator, ["positive"])
    project.refresh_from_db()
    assert not snapshot_due(project)
    label(items[3], annotator, ["negative"])
    project.refresh_from_db()
    assert snapshot_due(project)
    assert jobs.versions_work(project.pk)
    version = DatasetVersion.objects.get(project=project)
    assert (version.trigger, version.author, version.labelled) == ("automatic", None, 4)
    assert not snapshot_due(project)
    for item in items[4:7]:
        label(item, annotator, ["positive"])
    project.refresh_from_db()
    assert not snapshot_due(project)  # 3 more: not yet


def test_a_queued_version_is_written_and_measured_by_the_worker_job(project, annotator):
    set_training(project, split_validation=0.0, split_test=0.3)
    add_text_items(
        project,
        [f"{'great lovely superb' if i % 2 else 'awful horrid dreadful'} {i}" for i in range(120)],
        prefix="w",
    )
    for i, item in enumerate(Item.objects.filter(project=project, external_id__startswith="w")):
        label(item, annotator, ["positive" if i % 2 else "negative"])
    version = version_request(project, name="queued", author=annotator)
    assert version.status == DatasetVersion.Status.QUEUED
    assert {jobs.VERSIONS} <= jobs.JOB_TYPES and jobs.VERSIONS in jobs.due_jobs(project.pk)
    assert jobs.versions_work(project.pk)
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY
    assert version.metrics_status == DatasetVersion.Metrics.DONE
    metrics = version.metrics
    test_size = version.split_counts["test"]["labelled"]
    assert metrics["test"] == test_size and metrics["train"] == 120 - test_size
    assert metrics["accuracy"] >= 0.9  # the two classes differ in every word
    low, high = metrics["accuracy_interval"]
    assert low <= metrics["accuracy"] <= high
    assert jobs.VERSIONS not in jobs.due_jobs(project.pk)


def test_metrics_are_skipped_with_the_reason_when_the_splits_are_too_small(project, labelled_half):
    from curation.version_metrics import metrics_measure

    version = version_create(project)
    metrics = metrics_measure(version)
    version.refresh_from_db()
    assert version.metrics_status == DatasetVersion.Metrics.SKIPPED
    assert "needs 10 labelled items" in metrics["reason"]


def test_a_version_whose_writer_died_is_written_again(project, labelled_half):
    from datetime import timedelta

    from django.utils import timezone

    version = version_request(project)
    DatasetVersion.objects.filter(pk=version.pk).update(
        status=DatasetVersion.Status.BUILDING, started_at=timezone.now() - timedelta(hours=1)
    )
    assert jobs.versions_work(project.pk)
    version.refresh_from_db()
    assert version.status == DatasetVersion.Status.READY and version.labelled == 10


# --- Commands ----------------------------------------------------------------------------------


def test_snapshot_prints_the_name_and_content_hash(project, labelled_half, capsys):
    call_command("snapshot", str(project.pk), "--name", "cmd", "--note", "from the shell")
    out = capsys.readouterr().out.split()
    version = DatasetVersion.objects.get(project=project)
    assert out == ["cmd", version.content_hash] and version.note == "from the shell"


def test_snapshot_refuses_a_taken_name_and_an_unknown_project(project, labelled_half):
    call_command("snapshot", "Sentiment", "--name", "x")
    with pytest.raises(CommandError, match="taken"):
        call_command("snapshot", "Sentiment", "--name", "x")
    with pytest.raises(CommandError, match="No project"):
        call_command("snapshot", "nope")


def test_diff_versions_prints_json(project, annotator, labelled_half, capsys):
    call_command("snapshot", str(project.pk), "--name", "a")
    label(labelled_half[15], annotator, ["neutral"])
    call_command("snapshot", str(project.pk), "--name", "b")
    capsys.readouterr()
    call_command("diff_versions", str(project.pk), "a", "b", "--json")
    diff = json.loads(capsys.readouterr().out)
    assert diff["summary"]["labelled"] == 1 and diff["changes"][0]["external_id"] == "t15"
    with pytest.raises(CommandError, match="No version 'c'.*a, b"):
        call_command("diff_versions", str(project.pk), "a", "c")


# --- One point in time ---------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_labels_committed_while_a_version_is_read_are_not_in_it(project, annotator, monkeypatch):
    """The version is read in one REPEATABLE READ snapshot: a relabel and an answer committed
    by another connection after the read began stay out, even in chunks read after them."""
    import threading

    from django.db import connection

    from annotations import exports
    from curation import dataset_versions

    items = list(Item.objects.filter(project=project).order_by("id"))
    for item in items[:5]:
        label(item, annotator, ["positive"])
    late_relabel, late_answer = items[0], items[15]
    walk = exports.export_items

    def write_elsewhere() -> None:
        label(late_relabel, annotator, ["negative"])  # an edit of t0
        label(late_answer, annotator, ["neutral"])
        connection.close()

    def slow_walk(project, **kwargs):
        for n, row in enumerate(walk(project, chunk_size=4, **kwargs)):
            if n == 1:  # the read has begun: commit changes from another connection
                writer = threading.Thread(target=write_elsewhere)
                writer.start()
                writer.join()
            yield row

    monkeypatch.setattr(dataset_versions, "export_items", slow_walk)
    version = version_create(project, name="during")
    rows = by_external_id(version)
    assert Item.objects.get(pk=late_answer.pk).annotation_count == 1  # it did commit
    assert rows["t0"]["gold"]["labels"] == ["positive"]
    assert rows["t15"]["gold"] is None and version.labelled == 5
    monkeypatch.setattr(dataset_versions, "export_items", walk)
    after = by_external_id(version_create(project, name="after"))
    assert after["t0"]["gold"]["labels"] == ["negative"] and after["t15"]["gold"] is not None
