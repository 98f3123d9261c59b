"""Label classes change without losing data: a rename reaches every stored answer, gold label,
review, log entry and prediction; a class in use cannot be deleted, only retired; the schema's
item kind and mode are frozen once items exist."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from annotations import exports, queue
from annotations.label_classes import (
    label_class_add,
    label_class_delete,
    label_class_move,
    label_class_set_retired,
    label_class_update,
    project_schema_set,
)
from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    LabelClass,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import review_decide, review_next
from annotations.services import annotation_submit, project_create, project_recount
from curation import artifacts
from curation.models import EvalSample, ModelVersion, ProjectTraining
from curation.services import train_project_once

pytestmark = [pytest.mark.postgres, pytest.mark.usefixtures("fast_passwords")]


def answer(item: Item, user, labels: list[str]) -> Annotation:
    """Answer like an annotator does: take items from the queue, then submit."""
    queue.next_items(project=item.project, user=user, count=5)
    return annotation_submit(
        item=item, annotator=user, labels=labels, client_uuid=uuid.uuid4()
    ).annotation


def by_id(project: Project, external_id: str) -> Item:
    item = Item.objects.get(project=project, external_id=external_id)
    item.project = project
    return item


def cls(project: Project, name: str) -> LabelClass:
    return LabelClass.objects.get(project=project, name=name)


def stored_names(project: Project) -> str:
    """Every stored list of class names of the project, as one text to search."""
    parts = [
        list(Annotation.objects.filter(project=project).values_list("labels", flat=True)),
        list(
            AnnotationRevision.objects.filter(annotation__project=project).values_list(
                "labels", "previous_labels"
            )
        ),
        list(GoldLabel.objects.filter(project=project).values_list("labels", flat=True)),
        list(Review.objects.filter(project=project).values_list("labels", "model_labels")),
        list(
            ReviewEvent.objects.filter(review__project=project).values_list("labels", "candidates")
        ),
        list(EvalSample.objects.filter(project=project).values_list("predicted", "truth")),
    ]
    return json.dumps(parts)


@pytest.fixture
def history(project, annotator, reviewer, project_admin):
    """Two answers per item: t0 agreed, t1 disputed and decided by a reviewer, t2 disputed and
    still open, t3 answered then edited; an evaluation sample predicted "positive"."""
    Project.objects.filter(pk=project.pk).update(overlap=2)
    project.refresh_from_db()
    t0, t1, t2, t3 = (by_id(project, f"t{i}") for i in range(4))
    answer(t0, annotator, ["positive"])
    answer(t1, annotator, ["positive"])
    answer(t2, annotator, ["negative"])
    answer(t3, annotator, ["positive"])
    answer(t3, annotator, ["negative"])  # an edit: a revision with previous_labels
    answer(t0, reviewer, ["positive"])
    answer(t1, reviewer, ["negative"])
    answer(t2, reviewer, ["positive"])
    answer(t3, reviewer, ["negative"])
    decided = review_next(project=project, reviewer=reviewer)
    assert decided.item_id == t1.pk
    review_decide(project=project, review_id=decided.pk, reviewer=reviewer, labels=["positive"])
    EvalSample.objects.create(project=project, item=by_id(project, "t5"), predicted=["positive"])
    assert Review.objects.get(item=t2).status == Review.Status.OPEN
    return {"t0": t0, "t1": t1, "t2": t2, "t3": t3}


def gold_of(project: Project) -> dict[str, dict | None]:
    return {
        r["external_id"]: r["gold"]
        for r in (
            json.loads(line) for line in "".join(exports.jsonl_chunks(project)).split("\n")[:-1]
        )
        if r["external_id"] in {"t0", "t1", "t2", "t3"}
    }


# --- Rename -----------------------------------------------------------------------------------


def test_a_rename_rewrites_every_stored_name_and_the_export_keeps_its_gold_labels(project, history):
    before = gold_of(project)
    assert before["t0"]["labels"] == ["positive"] and before["t1"]["source"] == "adjudicated"
    changed = label_class_update(label_class=cls(project, "positive"), name="favourable")
    assert changed == ["name"]
    assert '"positive"' not in stored_names(project)
    # The next recount used to delete every gold label of the renamed class.
    project_recount(project)
    after = gold_of(project)
    for external_id, gold in before.items():
        expected = (
            None
            if gold is None
            else {
                **gold,
                "labels": ["favourable" if n == "positive" else n for n in gold["labels"] or []]
                if gold["labels"] is not None
                else None,
            }
        )
        assert after[external_id] == expected, external_id
    assert after["t0"]["labels"] == ["favourable"]
    assert after["t1"] == {**before["t1"], "labels": ["favourable"]}
    decided = Review.objects.get(item=history["t1"])
    assert decided.labels == ["favourable"]
    event = decided.events.get(action=ReviewEvent.Action.DECIDE)
    assert event.labels == ["favourable"]
    assert sorted(c["labels"][0] for c in event.candidates) == ["favourable", "negative"]
    revision = AnnotationRevision.objects.get(annotation__item=history["t3"])
    assert (revision.previous_labels, revision.labels) == (["favourable"], ["negative"])
    assert EvalSample.objects.get(project=project).predicted == ["favourable"]
    assert project.class_names() == ["favourable", "negative", "neutral"]


def test_after_a_rename_the_open_review_is_decided_with_the_new_name_and_pages_work(
    client, project, history, reviewer
):
    label_class_update(label_class=cls(project, "positive"), name="favourable")
    open_review = Review.objects.get(item=history["t2"])
    review_decide(
        project=project, review_id=open_review.pk, reviewer=reviewer, labels=["favourable"]
    )
    assert GoldLabel.objects.get(item=history["t2"]).labels == ["favourable"]
    client.force_login(reviewer)
    quality = client.get(reverse("project_quality", args=[project.pk]))
    assert quality.status_code == 200
    assert "favourable" in quality.content.decode()
    assert client.get(reverse("review", args=[project.pk])).status_code == 200
    with pytest.raises(ValidationError, match="Unknown label"):
        answer(by_id(project, "t6"), reviewer, ["positive"])


def test_a_rename_drops_the_current_model_and_the_retrained_one_knows_the_new_name(
    data_dir, project, history
):
    first = train_project_once(project)
    assert first is not None and "positive" in first.class_balance
    label_class_update(label_class=cls(project, "positive"), name="favourable")
    training = ProjectTraining.objects.get(project=project)
    assert training.current_version is None  # its file speaks of "positive"
    assert training.labels_until is None  # stale: the sweep retrains it if the request is lost
    assert "favourable" in ModelVersion.objects.get(pk=first.pk).class_balance
    second = train_project_once(project)
    assert second is not None and second.version == first.version + 1
    header = artifacts.read_model_file(second.path)[1]
    assert header["classes"] == ["favourable", "negative", "neutral"]
    assert second.class_balance["favourable"] > 0


def test_renaming_to_a_name_in_use_or_to_nothing_is_refused_and_changes_nothing(project, history):
    before = stored_names(project)
    with pytest.raises(ValidationError, match="already exists"):
        label_class_update(label_class=cls(project, "positive"), name="negative")
    with pytest.raises(ValidationError, match="needs a name"):
        label_class_update(label_class=cls(project, "positive"), name="  ")
    assert stored_names(project) == before
    assert project.class_names() == ["positive", "negative", "neutral"]


def test_colour_key_and_order_change_without_touching_the_data(project, history):
    before = stored_names(project)
    changed = label_class_update(label_class=cls(project, "neutral"), color="#123456", key="N")
    assert changed == ["color", "key"]
    assert (cls(project, "neutral").color, cls(project, "neutral").key) == ("#123456", "n")
    label_class_move(label_class=cls(project, "neutral"), offset=-2)
    assert project.class_names() == ["neutral", "positive", "negative"]
    assert stored_names(project) == before
    with pytest.raises(ValidationError):
        label_class_update(label_class=cls(project, "positive"), key="n")  # neutral's key


# --- Delete and retire ------------------------------------------------------------------------


def test_deleting_a_class_in_use_is_refused_with_a_pointer_to_retire_and_changes_nothing(
    project, history
):
    before = stored_names(project)
    with pytest.raises(ValidationError, match="Retire it instead") as refused:
        label_class_delete(label_class=cls(project, "negative"))
    assert "4 answers" in str(refused.value)
    assert project.class_names() == ["positive", "negative", "neutral"]
    assert stored_names(project) == before
    label_class_delete(label_class=cls(project, "neutral"))  # nobody used it
    assert project.class_names() == ["positive", "negative"]


def test_a_class_only_in_the_review_log_is_in_use_too(project, history):
    added = label_class_add(project=project, name="sarcastic")
    ReviewEvent.objects.filter(action=ReviewEvent.Action.DECIDE).update(labels=["sarcastic"])
    with pytest.raises(ValidationError, match="Retire it instead"):
        label_class_delete(label_class=added)


def test_a_retired_class_stays_in_the_data_but_is_not_offered_or_accepted(
    client, project, history, annotator
):
    before_gold = gold_of(project)
    assert label_class_set_retired(label_class=cls(project, "negative"), retired=True)
    assert gold_of(project) == before_gold
    project_recount(project)
    assert gold_of(project) == before_gold
    assert project.class_names() == ["positive", "negative", "neutral"]
    assert project.class_names().offered == ["positive", "neutral"]
    with pytest.raises(ValidationError, match="retired"):
        answer(by_id(project, "t6"), annotator, ["negative"])
    client.force_login(annotator)
    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert 'value="negative"' not in page and 'value="positive"' in page
    label_class_set_retired(label_class=cls(project, "negative"), retired=False)
    assert answer(by_id(project, "t6"), annotator, ["negative"]).labels == ["negative"]


def test_the_last_offered_class_cannot_be_retired(db):
    project = project_create(name="Two", classes=["a", "b"])
    label_class_set_retired(
        label_class=LabelClass.objects.get(project=project, name="a"), retired=True
    )
    with pytest.raises(ValidationError, match="at least one class"):
        label_class_set_retired(
            label_class=LabelClass.objects.get(project=project, name="b"), retired=True
        )


# --- The schema's kind and mode ---------------------------------------------------------------


def test_item_kind_and_labelling_mode_are_frozen_once_the_project_has_items(project, db):
    with pytest.raises(ValidationError, match="no longer change"):
        project_schema_set(project=project, item_kind="image", labeling_mode="single")
    with pytest.raises(ValidationError, match="no longer change"):
        project_schema_set(project=project, item_kind="text", labeling_mode="multi")
    empty = project_create(name="Empty", classes=["a", "b"])
    assert project_schema_set(project=empty, item_kind="image", labeling_mode="multi")
    empty.refresh_from_db()
    assert (empty.item_kind, empty.labeling_mode) == ("image", "multi")


# --- The page ---------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, project_admin):
    client.force_login(project_admin)
    return client


def post(client, project, **data):
    return client.post(reverse("project_label_classes", args=[project.pk]), data)


def test_the_page_renames_reorders_retires_and_adds_classes(admin_client, project, history):
    url = reverse("project_label_classes", args=[project.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and 'name="csrfmiddlewaretoken"' in page.content.decode()
    positive = cls(project, "positive")
    response = post(
        admin_client,
        project,
        action="update",
        label_class=positive.pk,
        name="favourable",
        color=positive.color,
        key="",
    )
    assert response.status_code == 302
    assert "Renamed positive to favourable" in str(list(get_messages(response.wsgi_request))[0])
    assert GoldLabel.objects.get(item=history["t0"]).labels == ["favourable"]
    assert post(admin_client, project, action="down", label_class=positive.pk).status_code == 302
    assert project.class_names() == ["negative", "favourable", "neutral"]
    assert post(admin_client, project, action="retire", label_class=positive.pk).status_code == 302
    assert LabelClass.objects.get(pk=positive.pk).retired
    added = post(admin_client, project, action="add", **{"add-name": "mixed", "add-key": "m"})
    assert added.status_code == 302
    assert project.class_names()[-1] == "mixed"


def test_the_page_refuses_deleting_a_used_class_with_a_message_and_no_change(
    admin_client, project, history
):
    negative = cls(project, "negative")
    response = post(admin_client, project, action="delete", label_class=negative.pk)
    assert response.status_code == 400
    assert "Retire it instead" in response.content.decode()
    assert LabelClass.objects.filter(pk=negative.pk).exists()
    for bad in (
        {"action": "update", "label_class": negative.pk, "name": "x", "color": "red"},
        {"action": "update", "label_class": "nope", "name": "x"},
        {"action": "retire", "label_class": 10**12},
        {"action": "add", "add-name": "", "add-key": "too long"},
        {"action": "explode"},
    ):
        assert post(admin_client, project, **bad).status_code == 400, bad
    assert project.class_names() == ["positive", "negative", "neutral"]


def test_no_stored_name_is_left_behind_on_the_database_either(project, history):
    """The rename runs as set-wise UPDATEs on PostgreSQL: check the rows, not the ORM cache."""
    label_class_update(label_class=cls(project, "negative"), name="unfavourable")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM annotations_annotation WHERE project_id = %s "
            "AND labels @> '[\"negative\"]'::jsonb",
            [project.pk],
        )
        assert cursor.fetchone()[0] == 0
        cursor.execute(
            "SELECT count(*) FROM annotations_annotation WHERE project_id = %s "
            "AND labels @> '[\"unfavourable\"]'::jsonb",
            [project.pk],
        )
        assert cursor.fetchone()[0] == 4


def test_a_training_run_that_waited_through_a_rename_leaves_the_model_to_the_next_run(
    data_dir, project, history
):
    """A worker read the old classes, then waited for the training lock while the rename
    committed: it must not save a model that speaks of the old names as the current one."""
    from curation import trainer

    assert train_project_once(project) is not None
    stale_state = trainer._states[project.pk]  # built with the old classes
    label_class_update(label_class=cls(project, "positive"), name="favourable")
    assert trainer._train_locked(project, stale_state) is None
    assert ProjectTraining.objects.get(project=project).current_version is None
    retrained = train_project_once(project)
    assert "favourable" in retrained.class_balance


def _someone_waits_for_the_schema_lock(project: Project) -> bool:
    from annotations.label_classes import _SCHEMA_LOCK

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND classid = %s AND objid = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [_SCHEMA_LOCK, project.pk],
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.django_db(transaction=True)
def test_an_answer_checked_against_the_old_name_commits_before_the_rename_rewrites(
    project, annotator
):
    """An answer validated against "positive" while a rename to "favourable" starts: the
    rename waits for it and rewrites it too, instead of leaving it under a name that no
    longer exists."""
    import threading
    import time

    from django.db import connections, transaction

    from annotations.label_classes import class_names_locked

    item = by_id(project, "t0")
    checked, renamed = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def rename() -> None:
        try:
            checked.wait(10)
            label_class_update(label_class=cls(project, "positive"), name="favourable")
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            renamed.set()
            connections.close_all()

    thread = threading.Thread(target=rename)
    thread.start()
    with transaction.atomic():
        names = class_names_locked(project)
        assert "positive" in names  # the answer is checked against the old name
        checked.set()
        # Wait until the rename either blocks on the schema lock or (without it) finishes.
        deadline = time.monotonic() + 10
        while not renamed.is_set() and not _someone_waits_for_the_schema_lock(project):
            assert time.monotonic() < deadline, "the rename neither waited nor finished"
            renamed.wait(0.05)
        Annotation.objects.create(
            project=project, item=item, annotator=annotator, labels=["positive"]
        )
    thread.join(10)
    assert not errors, errors
    assert Annotation.objects.get(item=item).labels == ["favourable"]
