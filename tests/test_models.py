"""Model constraints and the counter services: what the database refuses, and that progress
counters always agree with the annotations."""

from __future__ import annotations

import uuid

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from annotations.models import (
    Annotation,
    Item,
    LabelClass,
    Membership,
    Project,
    item_image_path,
)
from annotations.services import (
    project_create,
    project_recount,
    project_set_overlap,
)
from tests.conftest import add_text_items, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")


def refused(create) -> bool:
    """True if the database refuses `create()` (in a savepoint, so the test can go on)."""
    try:
        with transaction.atomic():
            create()
    except IntegrityError:
        return True
    return False


# --- Constraints -----------------------------------------------------------------------------


def test_external_ids_are_unique_within_a_project_only(project, other_project):
    assert refused(lambda: Item.objects.create(project=project, external_id="t0"))
    Item.objects.create(project=other_project, external_id="t0")
    assert Item.objects.filter(external_id="t0").count() == 2


def test_label_names_are_unique_within_a_project(project, other_project):
    assert refused(lambda: LabelClass.objects.create(project=project, name="positive"))
    LabelClass.objects.create(project=other_project, name="positive")


def test_keyboard_keys_are_unique_within_a_project_but_blank_keys_may_repeat(project):
    LabelClass.objects.filter(project=project, name="positive").update(key="p")
    assert refused(lambda: LabelClass.objects.create(project=project, name="x", key="p"))
    LabelClass.objects.create(project=project, name="y", key="")
    LabelClass.objects.create(project=project, name="z", key="")
    assert LabelClass.objects.filter(project=project, key="").count() == 4


def test_a_keyboard_key_is_one_lowercase_letter_or_digit(project):
    for bad in ("P", "%", " "):
        label = LabelClass(project=project, name=f"k{bad}", key=bad)
        with pytest.raises(ValidationError, match="one lowercase letter or digit"):
            label.full_clean()
    LabelClass(project=project, name="ok", key="7").full_clean()


def test_a_label_colour_must_be_a_hex_colour(project):
    with pytest.raises(ValidationError, match="#4f7cff"):
        LabelClass(project=project, name="c", color="red").full_clean()


def test_overlap_below_one_is_refused_by_the_database_and_by_validation(project):
    assert refused(lambda: Project.objects.filter(pk=project.pk).update(overlap=0))
    project.overlap = 0
    with pytest.raises(ValidationError):
        project.full_clean()


def test_a_user_has_one_membership_per_project(project, annotator):
    assert refused(
        lambda: Membership.objects.create(
            project=project, user=annotator, role=Membership.Role.ADMIN
        )
    )


def test_one_annotation_per_item_and_annotator_and_submission_ids_are_unique(project, annotator):
    item, sid = project.items.first(), uuid.uuid4()
    Annotation.objects.create(project=project, item=item, annotator=annotator, client_uuid=sid)
    assert refused(
        lambda: Annotation.objects.create(project=project, item=item, annotator=annotator)
    )
    other_item = project.items.exclude(pk=item.pk).first()
    assert refused(
        lambda: Annotation.objects.create(
            project=project, item=other_item, annotator=annotator, client_uuid=sid
        )
    )


def test_annotation_labels_must_be_a_list_of_names(project, annotator):
    annotation = Annotation(project=project, item=project.items.first(), annotator=annotator)
    annotation.labels = "positive"
    with pytest.raises(ValidationError, match="list of class names"):
        annotation.clean()


def test_an_annotator_with_answers_cannot_be_deleted_silently(project, annotator):
    item = project.items.select_related("project").first()
    submit_handed_out(item=item, annotator=annotator, labels=["positive"], client_uuid=uuid.uuid4())
    from django.db.models import ProtectedError

    with pytest.raises(ProtectedError):
        annotator.delete()


def test_images_are_stored_under_a_random_name_keeping_only_the_suffix(project):
    item = Item(project=project, external_id="x")
    path = item_image_path(item, "../../etc/Evil Name.PNG")
    assert path.startswith(f"projects/{project.pk}/")
    assert path.endswith(".png")
    assert "Evil" not in path and ".." not in path
    assert item_image_path(item, "a.png") != item_image_path(item, "a.png")


def test_new_items_get_a_random_priority(project):
    a = Item.objects.create(project=project, external_id="r1")
    b = Item.objects.create(project=project, external_id="r2")
    assert 0 <= a.priority < 1 and 0 <= b.priority < 1
    assert a.priority != b.priority


# --- project_create ----------------------------------------------------------------------------


def test_project_create_numbers_the_classes_in_order_with_distinct_colours(db):
    project = project_create(name="P", classes=["x", ("y", "#123456"), "z"])
    rows = list(project.label_classes.values_list("name", "order", "color"))
    assert [r[:2] for r in rows] == [("x", 0), ("y", 1), ("z", 2)]
    assert rows[1][2] == "#123456"
    assert len({r[2] for r in rows}) == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"classes": ["a", "a"]}, None),
        ({"classes": ["a", ("b", "blue")]}, "classes"),  # "Class 2: Use a colour like …"
        ({"overlap": 0}, "overlap"),
        ({"item_kind": "video"}, "item_kind"),
        ({"name": ""}, "name"),
    ],
)
def test_project_create_refuses_bad_input_and_creates_nothing(db, kwargs, field):
    with pytest.raises(ValidationError) as info:
        project_create(**{"name": "Bad", **kwargs})
    if field:
        assert field in info.value.message_dict
    assert not Project.objects.exists()
    assert not LabelClass.objects.exists()


def test_project_names_are_unique(project):
    with pytest.raises(ValidationError, match="name"):
        project_create(name="Sentiment", classes=["a"])


# --- Counters ---------------------------------------------------------------------------------


def answer(project: Project, item: Item, user, *, skipped: bool = False) -> None:
    item.project = project
    submit_handed_out(
        item=item,
        annotator=user,
        labels=[] if skipped else ["positive"],
        skipped=skipped,
        client_uuid=uuid.uuid4(),
    )


def snapshot(project: Project) -> tuple:
    project.refresh_from_db()
    items = tuple(project.items.order_by("id").values_list("annotation_count", "needs_annotation"))
    return project.item_count, project.complete_count, items


def test_project_recount_restores_counters_from_the_annotations(project, annotator, reviewer):
    project = project_set_overlap(project, 2)
    items = list(project.items.order_by("id"))
    answer(project, items[0], annotator)
    answer(project, items[0], reviewer)
    answer(project, items[1], annotator)
    answer(project, items[2], annotator, skipped=True)
    exact = snapshot(project)
    assert exact[:2] == (20, 1)
    # Corrupt every counter, as a bulk delete in admin or a bad import would.
    Item.objects.filter(project=project).update(annotation_count=7, needs_annotation=False)
    Project.objects.filter(pk=project.pk).update(item_count=3, complete_count=99)
    assert snapshot(project_recount(project)) == exact
    assert (items[0].pk, 2) in set(project.items.values_list("pk", "annotation_count")), (
        "both answers of an item are counted"
    )


def test_project_recount_follows_deleted_items_and_annotations(project, annotator):
    items = list(project.items.order_by("id"))
    for item in items[:3]:
        answer(project, item, annotator)
    items[0].delete()
    Annotation.objects.filter(item=items[1]).delete()
    project = project_recount(project)
    assert (project.item_count, project.complete_count) == (19, 1)
    assert Item.objects.get(pk=items[1].pk).needs_annotation


def test_project_recount_leaves_other_projects_alone(project, other_project, annotator):
    before = snapshot(other_project)
    Project.objects.filter(pk=other_project.pk).update(complete_count=0)
    project_recount(project)
    assert snapshot(other_project) == before


def test_raising_the_overlap_reopens_items_and_lowering_it_closes_them(
    project, annotator, reviewer
):
    items = list(project.items.order_by("id"))
    project = project_set_overlap(project, 2)
    answer(project, items[0], annotator)
    answer(project, items[0], reviewer)
    answer(project, items[1], annotator)
    assert snapshot(project)[:2] == (20, 1)
    assert Item.objects.get(pk=items[1].pk).needs_annotation

    project = project_set_overlap(project, 1)
    assert project.overlap == 1
    assert (project.item_count, project.complete_count) == (20, 2)
    assert not Item.objects.get(pk=items[1].pk).needs_annotation

    project = project_set_overlap(project, 3)
    assert project.complete_count == 0

    project = project_set_overlap(project, 1)
    assert project.complete_count == 2
    assert not Item.objects.get(pk=items[0].pk).needs_annotation


def test_setting_the_overlap_below_one_is_refused_and_changes_nothing(project):
    with pytest.raises(ValidationError, match="at least 1"):
        project_set_overlap(project, 0)
    project.refresh_from_db()
    assert project.overlap == 1


def test_progress_properties(project, annotator):
    assert (project.percent_complete, project.remaining_count) == (0, 20)
    for item in list(project.items.order_by("id"))[:5]:
        answer(project, item, annotator)
    project.refresh_from_db()
    assert (project.percent_complete, project.remaining_count) == (25, 15)
    empty = project_create(name="Empty", classes=["a"])
    assert empty.percent_complete == 0


def test_add_text_items_helper_counts_the_new_items(project):
    add_text_items(project, ["more"], prefix="m")
    project.refresh_from_db()
    assert project.item_count == 21 == project.items.count()


def test_members_have_roles(project, annotator, reviewer, project_admin):
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles == {"annie": "annotator", "rev": "reviewer", "padmin": "admin"}
    assert set(project.members.all()) == {annotator, reviewer, project_admin}
    assert make_user("nobody").projects.count() == 0
