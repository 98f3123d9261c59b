"""The Django admin: every page opens, progress is shown and kept exact through admin edits,
deletions and bulk actions, and user text is always escaped."""

from __future__ import annotations

import io
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from PIL import Image

from annotations import queue, services
from annotations.admin import LargeTablePaginator
from annotations.assignments import assignment_create
from annotations.models import (
    Annotation,
    AnnotationRevision,
    GoldLabel,
    Item,
    ItemAssignment,
    ItemLease,
    LabelClass,
    Membership,
    Project,
    Review,
    ReviewEvent,
)
from annotations.review import review_flag
from tests.conftest import add_text_items, make_user, submit_handed_out

PAYLOAD = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def label(item: Item, user, labels: list[str], *, skipped: bool = False) -> Annotation:
    return submit_handed_out(
        item=item, annotator=user, labels=labels, skipped=skipped, client_uuid=uuid.uuid4()
    ).annotation


def form_data(response) -> dict:
    """The POST body an admin change form would send back unchanged (inlines included)."""
    data: dict = {}

    def add(form) -> None:
        for name in form.fields:
            value = form[name].value()
            key = form.add_prefix(name)
            if value is True:
                data[key] = "on"
            elif value is False or value is None:
                continue
            else:
                data[key] = value

    add(response.context["adminform"].form)
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        add(formset.management_form)
        for form in formset.forms:
            add(form)
    return data


def changelist_action(client, model: str, action: str, pks: list[int], **extra):
    return client.post(
        reverse(f"admin:annotations_{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks], **extra},
        follow=True,
    )


@pytest.fixture
def admin_client_(client, superuser):
    client.force_login(superuser)
    return client


@pytest.fixture
def png_item(project, settings, tmp_path) -> Item:
    settings.MEDIA_ROOT = tmp_path
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="PNG")
    item = Item(project=project, external_id="red.png", image_format="PNG", image_width=8)
    item.image.save("red.png", io.BytesIO(buffer.getvalue()), save=False)
    item.save()
    services.add_items_counted(project, 1)
    return item


@pytest.fixture
def populated(project, annotator, reviewer, png_item) -> Project:
    """A project with answers, an edited answer (a revision) and live leases."""
    items = list(Item.objects.filter(project=project, text__startswith="review").order_by("id"))
    label(items[0], annotator, ["positive"])
    label(items[1], annotator, [], skipped=True)
    submit_handed_out(
        item=items[0], annotator=annotator, labels=["negative"], client_uuid=uuid.uuid4()
    )
    queue.next_items(project=project, user=reviewer, count=2)
    project.refresh_from_db()
    return project


def test_a_superuser_opens_every_admin_page_of_every_model(admin_client_, populated):
    read_only = {Annotation, AnnotationRevision, ItemLease, LabelClass}
    models = [Project, LabelClass, Membership, Item, Annotation, AnnotationRevision, ItemLease]
    for model in models:
        name = model._meta.model_name
        obj = model.objects.first()
        assert obj is not None, f"no {name} to open"
        changelist = admin_client_.get(reverse(f"admin:annotations_{name}_changelist"))
        assert changelist.status_code == 200, name
        change = admin_client_.get(reverse(f"admin:annotations_{name}_change", args=[obj.pk]))
        assert change.status_code == 200, name
        add = admin_client_.get(reverse(f"admin:annotations_{name}_add"))
        # Answers, their revisions, leases and label classes are written by the services only.
        assert add.status_code == (403 if model in read_only else 200), name
    assert admin_client_.get(reverse("admin:index")).status_code == 200


def test_the_project_changelist_shows_items_labelled_remaining_and_a_progress_bar(
    admin_client_, project, annotator
):
    for item in Item.objects.filter(project=project).order_by("id")[:5]:
        label(item, annotator, ["neutral"])
    html = admin_client_.get(reverse("admin:annotations_project_changelist")).content.decode()
    assert '<td class="field-items">20</td>' in html
    assert '<td class="field-labelled">5</td>' in html
    assert '<td class="field-remaining">15</td>' in html
    assert '<progress max="100" value="25"' in html


def test_html_in_user_text_is_escaped_on_every_admin_page(admin_client_, annotator):
    project = services.project_create(
        name=f"P {PAYLOAD}",
        classes=[PAYLOAD, "ok"],
        description=PAYLOAD,
        instructions=PAYLOAD,
    )
    Membership.objects.create(project=project, user=annotator)
    (item,) = add_text_items(project, [f"text {PAYLOAD}"])
    Item.objects.filter(pk=item.pk).update(metadata={"note": PAYLOAD})
    answer = label(item, annotator, [PAYLOAD])
    pages = [
        reverse("admin:annotations_project_changelist"),
        reverse("admin:annotations_project_change", args=[project.pk]),
        reverse("admin:annotations_item_changelist"),
        reverse("admin:annotations_item_change", args=[item.pk]),
        reverse("admin:annotations_annotation_changelist"),
        reverse("admin:annotations_annotation_change", args=[answer.pk]),
        reverse("admin:annotations_labelclass_changelist"),
        reverse("admin:annotations_membership_changelist"),
        reverse("admin:annotations_project_delete", args=[project.pk]),
    ]
    for url in pages:
        response = admin_client_.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert PAYLOAD not in html, url
        assert ESCAPED in html, url


def test_the_recount_action_repairs_the_progress_counters(admin_client_, project, annotator):
    for item in Item.objects.filter(project=project).order_by("id")[:3]:
        label(item, annotator, ["positive"])
    Project.objects.filter(pk=project.pk).update(item_count=999, complete_count=0)
    response = changelist_action(admin_client_, "project", "recount_progress", [project.pk])
    assert "Recounted 1 project(s)." in response.content.decode()
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (20, 3)


def test_the_release_leases_action_frees_only_the_selected_projects_items(
    admin_client_, project, other_project, annotator, outsider
):
    queue.next_items(project=project, user=annotator, count=3)
    queue.next_items(project=other_project, user=outsider, count=1)
    response = changelist_action(admin_client_, "project", "release_all_leases", [project.pk])
    assert "Released 3 lease(s)." in response.content.decode()
    assert not ItemLease.objects.filter(project=project).exists()
    assert ItemLease.objects.filter(project=other_project).count() == 1


def test_changing_the_overlap_in_admin_recomputes_which_items_need_annotation(
    admin_client_, project, annotator
):
    labelled = list(Item.objects.filter(project=project).order_by("id")[:3])
    for item in labelled:
        label(item, annotator, ["positive"])
    url = reverse("admin:annotations_project_change", args=[project.pk])
    data = form_data(admin_client_.get(url))
    data["overlap"] = "2"
    response = admin_client_.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    project.refresh_from_db()
    assert (project.overlap, project.complete_count) == (2, 0)
    assert Item.objects.filter(project=project, needs_annotation=True).count() == 20

    data["overlap"] = "1"
    assert admin_client_.post(url, data).status_code == 302
    project.refresh_from_db()
    assert project.complete_count == 3
    assert set(Item.objects.filter(project=project, needs_annotation=False)) == set(labelled)


def test_editing_a_project_in_admin_keeps_its_label_classes_and_counters(
    admin_client_, project, annotator
):
    label(Item.objects.filter(project=project).first(), annotator, ["positive"])
    url = reverse("admin:annotations_project_change", args=[project.pk])
    data = form_data(admin_client_.get(url))
    data["name"] = "Sentiment v2"
    assert admin_client_.post(url, data).status_code == 302
    project.refresh_from_db()
    assert project.name == "Sentiment v2"
    assert (project.item_count, project.complete_count) == (20, 1)
    assert list(project.label_classes.values_list("name", flat=True)) == [
        "positive",
        "negative",
        "neutral",
    ]


def test_two_new_label_classes_with_the_same_key_are_refused_with_a_message(admin_client_, db):
    url = reverse("admin:annotations_project_add")
    data = form_data(admin_client_.get(url))
    data["name"] = "Fresh"
    for i, name in enumerate(["mixed", "sarcastic"]):
        data.update(
            {
                f"label_classes-{i}-name": name,
                f"label_classes-{i}-key": "m",
                f"label_classes-{i}-color": "#123456",
                f"label_classes-{i}-order": str(i),
            }
        )
    data["label_classes-TOTAL_FORMS"] = "2"
    response = admin_client_.post(url, data)
    assert response.status_code == 200
    assert "Two label classes use the key &#x27;m&#x27;." in response.content.decode()
    assert not Project.objects.filter(name="Fresh").exists()


def test_members_are_added_through_the_project_inline(admin_client_, project):
    newcomer = make_user("newcomer")
    url = reverse("admin:annotations_project_change", args=[project.pk])
    data = form_data(admin_client_.get(url))
    i = int(data["memberships-TOTAL_FORMS"])
    data.update({f"memberships-{i}-user": str(newcomer.pk), f"memberships-{i}-role": "reviewer"})
    data["memberships-TOTAL_FORMS"] = str(i + 1)
    assert admin_client_.post(url, data).status_code == 302
    assert Membership.objects.get(project=project, user=newcomer).role == "reviewer"


def test_deleting_items_in_admin_keeps_the_projects_counters_right(
    admin_client_, project, annotator
):
    items = list(Item.objects.filter(project=project).order_by("id"))
    for item in items[:4]:
        label(item, annotator, ["positive"])
    doomed = [items[0].pk, items[1].pk, items[10].pk]  # two labelled, one open
    response = changelist_action(admin_client_, "item", "delete_selected", doomed, post="yes")
    assert response.status_code == 200
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (17, 2)
    assert Annotation.objects.filter(project=project).count() == 2

    one = items[2]
    response = admin_client_.post(
        reverse("admin:annotations_item_delete", args=[one.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (16, 1)


def test_deleting_many_items_shows_counts_instead_of_every_object(
    admin_client_, project, annotator
):
    add_text_items(project, [f"bulk {i}" for i in range(150)], prefix="bulk")
    label(Item.objects.get(project=project, external_id="bulk0"), annotator, ["positive"])
    pks = list(
        Item.objects.filter(project=project, external_id__startswith="bulk").values_list(
            "pk", flat=True
        )
    )
    confirm = admin_client_.post(
        reverse("admin:annotations_item_changelist"),
        {"action": "delete_selected", "_selected_action": [str(pk) for pk in pks]},
    )
    html = confirm.content.decode()
    assert "150 items" in html and "1 annotation" in html
    assert "bulk149" not in html
    changelist_action(admin_client_, "item", "delete_selected", pks, post="yes")
    project.refresh_from_db()
    assert (project.item_count, project.complete_count) == (20, 0)
    assert not Annotation.objects.filter(project=project).exists()


def test_deleting_annotations_in_admin_recounts_the_project(admin_client_, project, annotator):
    items = list(Item.objects.filter(project=project).order_by("id")[:3])
    answers = [label(item, annotator, ["negative"]) for item in items]
    changelist_action(
        admin_client_, "annotation", "delete_selected", [answers[0].pk, answers[1].pk], post="yes"
    )
    project.refresh_from_db()
    assert project.complete_count == 1
    items[0].refresh_from_db()
    assert (items[0].annotation_count, items[0].needs_annotation) == (0, True)


def test_deleting_a_project_in_admin_removes_everything_it_holds(
    admin_client_, populated, other_project
):
    url = reverse("admin:annotations_project_delete", args=[populated.pk])
    confirm = admin_client_.get(url).content.decode()
    assert "21 items" in confirm and "2 annotations" in confirm
    assert admin_client_.post(url, {"post": "yes"}).status_code == 302
    assert not Project.objects.filter(pk=populated.pk).exists()
    assert not Item.objects.filter(project_id=populated.pk).exists()
    assert not Annotation.objects.exists() and not AnnotationRevision.objects.exists()
    assert Item.objects.filter(project=other_project).count() == 1


def test_an_item_added_in_admin_is_counted_in_its_project(admin_client_, project):
    response = admin_client_.post(
        reverse("admin:annotations_item_add"),
        {
            "project": str(project.pk),
            "external_id": "added-by-hand",
            "text": "a new review",
            "metadata": "{}",
            "priority": "0.5",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    project.refresh_from_db()
    assert project.item_count == 21
    assert Item.objects.get(project=project, external_id="added-by-hand").needs_annotation


def test_the_move_to_front_action_puts_items_at_the_head_of_the_queue(
    admin_client_, project, annotator
):
    last = Item.objects.filter(project=project).order_by("priority").first()
    changelist_action(admin_client_, "item", "move_to_front", [last.pk])
    (served,) = queue.next_items(project=project, user=annotator, count=1)
    assert served == last


def test_a_superuser_sees_item_images_in_the_admin(admin_client_, png_item):
    change = admin_client_.get(reverse("admin:annotations_item_change", args=[png_item.pk]))
    image_url = reverse("admin:annotations_item_image", args=[png_item.pk])
    assert image_url in change.content.decode()
    response = admin_client_.get(image_url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert b"".join(response.streaming_content).startswith(b"\x89PNG")


def test_staff_without_the_item_view_permission_cannot_fetch_images(client, png_item):
    staff = make_user("staffer", is_staff=True)
    client.force_login(staff)
    response = client.get(reverse("admin:annotations_item_image", args=[png_item.pk]))
    assert response.status_code == 403


def test_the_item_changelist_query_count_does_not_grow_with_the_page(
    admin_client_, project, django_assert_max_num_queries
):
    with django_assert_max_num_queries(12):
        response = admin_client_.get(reverse("admin:annotations_item_changelist"))
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 20


def test_a_non_staff_user_is_sent_to_the_admin_login(client, project_admin):
    client.force_login(project_admin)
    for url in [
        reverse("admin:index"),
        reverse("admin:annotations_project_changelist"),
        reverse("admin:annotations_item_image", args=[1]),
    ]:
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.postgres
def test_the_unfiltered_item_list_of_a_large_table_is_counted_from_statistics(
    admin_client_, project, monkeypatch
):
    monkeypatch.setattr(LargeTablePaginator, "estimate_above", 5)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Item._meta.db_table}")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client_.get(reverse("admin:annotations_item_changelist"))
    assert response.context["cl"].result_count == 20
    assert not [
        q for q in queries if 'SELECT COUNT(*) AS "__count" FROM "annotations_item"' in q["sql"]
    ]

    filtered = admin_client_.get(
        reverse("admin:annotations_item_changelist") + f"?project__id__exact={project.pk}"
    )
    assert filtered.context["cl"].result_count == 20


def test_the_delete_action_removes_several_projects_at_once(
    admin_client_, populated, other_project
):
    changelist_action(
        admin_client_, "project", "delete_selected", [populated.pk, other_project.pk], post="yes"
    )
    assert not Project.objects.exists()
    assert not Item.objects.exists() and not ItemLease.objects.exists()


def test_the_project_page_links_to_its_items_annotate_import_and_export_pages(
    admin_client_, project
):
    html = admin_client_.get(
        reverse("admin:annotations_project_change", args=[project.pk])
    ).content.decode()
    items = reverse("admin:annotations_item_changelist") + f"?project__id__exact={project.pk}"
    assert f'<a href="{items}">Items</a>' in html
    for name, text in [
        ("annotate", "Annotate"),
        ("project_import", "Import"),
        ("project_export_jsonl", "Export JSONL"),
        ("project_export_csv", "Export CSV"),
    ]:
        assert f'<a href="{reverse(name, args=[project.pk])}">{text}</a>' in html


# --- Assignments, gold labels and reviews -----------------------------------------------------


@pytest.fixture
def reviewed(project, annotator, reviewer, superuser) -> Project:
    """An item answered twice in disagreement (overlap 2: a review), one flagged, and an
    assignment."""
    services.project_set_overlap(project, 2)
    first, second, third = Item.objects.filter(project=project).order_by("id")[:3]
    label(first, annotator, ["positive"])
    label(first, reviewer, ["negative"])
    review_flag(item=second, user=superuser, note=PAYLOAD)
    assignment_create(project=project, items=[third], users=[annotator], assigned_by=superuser)
    return project


def test_assignments_gold_labels_and_reviews_open_read_only_in_admin(admin_client_, reviewed):
    for model in (ItemAssignment, GoldLabel, Review, ReviewEvent):
        name = model._meta.model_name
        obj = model.objects.first()
        assert obj is not None, name
        changelist = admin_client_.get(reverse(f"admin:annotations_{name}_changelist"))
        assert changelist.status_code == 200, name
        change = admin_client_.get(reverse(f"admin:annotations_{name}_change", args=[obj.pk]))
        assert change.status_code == 200, name
        assert admin_client_.get(reverse(f"admin:annotations_{name}_add")).status_code == 403
    flagged = Review.objects.get(reasons=["flag"])
    html = admin_client_.get(
        reverse("admin:annotations_review_change", args=[flagged.pk])
    ).content.decode()
    assert ESCAPED in html and PAYLOAD not in html  # the flag note, in the event inline
    by_reason = admin_client_.get(reverse("admin:annotations_review_changelist") + "?reason=flag")
    assert [r.pk for r in by_reason.context["cl"].result_list] == [flagged.pk]


def test_the_project_admin_page_shows_the_review_and_consensus_settings(admin_client_, project):
    html = admin_client_.get(
        reverse("admin:annotations_project_change", args=[project.pk])
    ).content.decode()
    for field in ("serve_partial_first", "review_threshold", "consensus", "quality_threshold"):
        assert f'name="{field}"' in html
    assert 'name="training-0-strategy"' in html


def test_the_send_to_review_action_flags_items_with_a_note(admin_client_, project, superuser):
    items = list(Item.objects.filter(project=project).order_by("id")[:2])
    changelist_action(admin_client_, "item", "send_to_review", [i.pk for i in items])
    reviews = Review.objects.filter(item__in=items)
    assert reviews.count() == 2
    assert all(r.reasons == ["flag"] and r.flagged_by == superuser for r in reviews)
    assert set(ReviewEvent.objects.values_list("comment", flat=True)) == {"Flagged from the admin"}


def test_deleting_an_assignment_in_admin_returns_the_item_to_the_shared_queue(
    admin_client_, reviewed
):
    assignment = ItemAssignment.objects.get()
    changelist_action(
        admin_client_, "itemassignment", "delete_selected", [assignment.pk], post="yes"
    )
    assert not ItemAssignment.objects.exists()
    assignment.item.refresh_from_db()
    assert assignment.item.required_answers is None


def test_removing_a_member_in_admin_removes_their_assignments(admin_client_, reviewed, annotator):
    membership = Membership.objects.get(project=reviewed, user=annotator)
    admin_client_.post(
        reverse("admin:annotations_membership_delete", args=[membership.pk]), {"post": "yes"}
    )
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert not ItemAssignment.objects.exists()
    assert not Item.objects.filter(project=reviewed, required_answers__isnull=False).exists()
