"""Managing a project: the member, assignment and settings services, and the project admin's
pages (settings, members, assignments) with their denials."""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from annotations import queue
from annotations.assignments import (
    assignment_create,
    assignment_progress,
    assignment_remove,
    items_by_external_ids,
    items_random_open,
)
from annotations.members import membership_add, membership_remove, membership_set_role
from annotations.models import Annotation, Item, ItemAssignment, ItemLease, Membership, Project
from annotations.project_settings import project_settings_update
from annotations.services import project_create, project_recount
from curation.models import ProjectTraining
from tests.conftest import make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")

Role = Membership.Role
PAYLOAD = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def member(project: Project, username: str, role: str = Role.ANNOTATOR, **extra):
    user = make_user(username, **extra)
    Membership.objects.create(project=project, user=user, role=role)
    return user


def label(item: Item, user, labels=("positive",), *, skipped: bool = False) -> Annotation:
    return submit_handed_out(
        item=item,
        annotator=user,
        labels=[] if skipped else list(labels),
        skipped=skipped,
        client_uuid=uuid.uuid4(),
    ).annotation


def items(project: Project, *external_ids: str) -> list[Item]:
    found = {i.external_id: i for i in Item.objects.filter(project=project)}
    return [found[e] for e in external_ids]


def counters(project: Project) -> tuple:
    """Every item's queue state and the project's counters, as stored."""
    project.refresh_from_db()
    rows = tuple(
        Item.objects.filter(project=project)
        .order_by("pk")
        .values_list("pk", "annotation_count", "needs_annotation", "required_answers")
    )
    return rows, project.item_count, project.complete_count


def assert_counters_exact(project: Project) -> None:
    """What the services left equals a full recount from the answers."""
    kept = counters(project)
    project_recount(project)
    assert counters(project) == kept


def page_text(response) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", response.content.decode()).split())


def flash(response) -> list[str]:
    return [m.message for m in get_messages(response.wsgi_request)]


# --- Members ----------------------------------------------------------------------------------


def test_a_user_is_added_by_username_or_by_email_in_any_case(project, project_admin):
    make_user("bea", email="Bea@Example.test")
    make_user("carl")
    by_email = membership_add(
        project=project, username_or_email="bea@example.TEST", role="reviewer"
    )
    by_name = membership_add(project=project, username_or_email=" carl ", role="annotator")
    assert (by_email.user.username, by_email.role) == ("bea", Role.REVIEWER)
    assert (by_name.user.username, by_name.role) == ("carl", Role.ANNOTATOR)


@pytest.mark.parametrize(
    ("identifier", "message"),
    [
        ("nobody", "No user with the username or email 'nobody'."),
        ("nobody@example.test", "No user with the username or email 'nobody@example.test'."),
        ("", "Enter a username or an email address."),
    ],
)
def test_an_unknown_user_is_refused_by_name(project, identifier, message):
    with pytest.raises(ValidationError) as caught:
        membership_add(project=project, username_or_email=identifier, role="annotator")
    assert caught.value.message_dict == {"user": [message]}


def test_adding_a_member_twice_names_their_current_role(project, reviewer):
    with pytest.raises(ValidationError) as caught:
        membership_add(project=project, username_or_email="rev", role="annotator")
    assert caught.value.message_dict["user"] == [
        "rev is already a member of this project (reviewer)."
    ]
    assert Membership.objects.get(project=project, user=reviewer).role == Role.REVIEWER


def test_a_deactivated_account_or_a_shared_email_or_a_bad_role_is_refused(project):
    make_user("gone", is_active=False)
    make_user("twin1", email="same@example.test")
    make_user("twin2", email="SAME@example.test")
    make_user("fine")
    for identifier, role, field in [
        ("gone", "annotator", "user"),
        ("same@example.test", "annotator", "user"),
        ("fine", "owner", "role"),
    ]:
        with pytest.raises(ValidationError) as caught:
            membership_add(project=project, username_or_email=identifier, role=role)
        assert field in caught.value.message_dict
    assert not Membership.objects.filter(project=project).exists()


def test_the_last_project_admin_can_neither_step_down_nor_be_removed(project, project_admin):
    admin_row = Membership.objects.get(project=project, user=project_admin)
    with pytest.raises(ValidationError, match="at least one project admin"):
        membership_set_role(membership=admin_row, role=Role.REVIEWER)
    with pytest.raises(ValidationError, match="at least one project admin"):
        membership_remove(membership=admin_row)
    admin_row.refresh_from_db()
    assert admin_row.role == Role.ADMIN


def test_an_admin_steps_down_once_another_admin_exists(project, project_admin, reviewer):
    reviewer_row = Membership.objects.get(project=project, user=reviewer)
    membership_set_role(membership=reviewer_row, role=Role.ADMIN)
    admin_row = Membership.objects.get(project=project, user=project_admin)
    assert membership_set_role(membership=admin_row, role=Role.ANNOTATOR).role == Role.ANNOTATOR
    with pytest.raises(ValidationError, match="at least one project admin"):
        membership_remove(membership=reviewer_row)
    membership_remove(membership=admin_row)
    assert list(
        Membership.objects.filter(project=project).values_list("user__username", "role")
    ) == [("rev", Role.ADMIN)]


def test_removing_a_member_drops_their_assignments_and_the_items_return_to_the_queue(
    project, annotator, project_admin
):
    calibration = items(project, "t5", "t6")
    assignment_create(project=project, items=calibration, users=[annotator], assigned_by=None)
    queue.next_items(project=project, user=annotator, count=2)
    membership_remove(membership=Membership.objects.get(project=project, user=annotator))
    assert not ItemAssignment.objects.filter(user=annotator).exists()
    assert not ItemLease.objects.filter(user=annotator).exists()
    assert set(
        Item.objects.filter(pk__in=[i.pk for i in calibration]).values_list(
            "required_answers", flat=True
        )
    ) == {None}
    served = queue.next_items(project=project, user=project_admin, count=20)
    assert {i.pk for i in calibration} <= {i.pk for i in served}
    assert_counters_exact(project)


# --- Assignments: services --------------------------------------------------------------------


@pytest.fixture
def team(project, annotator, reviewer, project_admin):
    """Three annotators besides the reviewer and the admin."""
    return [annotator, member(project, "ann2"), member(project, "ann3")]


def test_a_calibration_set_goes_first_to_every_assignee_and_never_to_anyone_else(
    project, team, reviewer, project_admin
):
    calibration = items(project, "t17", "t18", "t19")  # the end of the ranked queue
    result = assignment_create(
        project=project, items=calibration, users=team, assigned_by=project_admin
    )
    assert (result.created, result.items, result.users) == (9, 3, 3)
    wanted = {i.pk for i in calibration}
    for user in team:
        first = queue.next_items(project=project, user=user, count=3)
        assert {i.pk for i in first} == wanted, f"{user} did not get the calibration set first"
    for outsider_of_the_set in (reviewer, project_admin):
        served = queue.next_items(project=project, user=outsider_of_the_set, count=30)
        assert not wanted & {i.pk for i in served}
        assert len(served) == 17  # everything else
        ItemLease.objects.filter(user=outsider_of_the_set).delete()


def test_an_assigned_item_completes_only_when_every_assignee_answered(project, team):
    (item,) = items(project, "t3")
    assignment_create(project=project, items=[item], users=team, assigned_by=None)
    item.refresh_from_db()
    assert (item.required_answers, item.needs_annotation) == (3, True)
    for user in team[:2]:
        label(item, user)
        item.refresh_from_db()
        assert item.needs_annotation, "complete before every assignee answered"
    project.refresh_from_db()
    assert project.complete_count == 0
    label(item, team[2])
    item.refresh_from_db()
    project.refresh_from_db()
    assert not item.needs_annotation
    assert project.complete_count == 1
    assert_counters_exact(project)


def test_answers_given_before_the_assignment_never_stand_in_for_an_assignees(
    project, team, reviewer
):
    (item,) = items(project, "t0")
    label(item, reviewer)
    project.refresh_from_db()
    assert project.complete_count == 1  # overlap 1: the reviewer's answer completed it
    assignment_create(project=project, items=[item], users=team[:2], assigned_by=None)
    item.refresh_from_db()
    project.refresh_from_db()
    assert (item.required_answers, item.needs_annotation, project.complete_count) == (3, True, 0)
    label(item, team[0])
    item.refresh_from_db()
    assert item.needs_annotation
    label(item, team[1])
    item.refresh_from_db()
    assert not item.needs_annotation
    assert_counters_exact(project)


def test_assigning_is_additive_and_idempotent(project, team):
    first = items(project, "t1", "t2")
    assignment_create(project=project, items=first, users=team[:1], assigned_by=None)
    again = assignment_create(project=project, items=first, users=team[:2], assigned_by=None)
    assert again.created == 2
    assert (
        assignment_create(project=project, items=first, users=team[:2], assigned_by=None).created
        == 0
    )
    assert set(
        Item.objects.filter(pk__in=[i.pk for i in first]).values_list("required_answers", flat=True)
    ) == {2}


def test_assignees_must_be_members_and_items_must_be_the_projects(
    project, other_project, annotator, outsider
):
    mine = items(project, "t1")
    with pytest.raises(ValidationError) as caught:
        assignment_create(
            project=project, items=mine, users=[annotator, outsider], assigned_by=None
        )
    assert caught.value.message_dict == {"users": ["Not annotators of this project: otto."]}
    theirs = list(other_project.items.all())
    with pytest.raises(ValidationError, match="not items of this project"):
        assignment_create(project=project, items=theirs, users=[annotator], assigned_by=None)
    with pytest.raises(ValidationError):
        assignment_create(project=project, items=[], users=[annotator], assigned_by=None)
    assert not ItemAssignment.objects.exists()


def test_assigning_a_complete_item_reopens_it_and_keeps_the_counters_exact(project, team, reviewer):
    done = items(project, "t4", "t5")
    for item in done:
        label(item, reviewer)
    project.refresh_from_db()
    assert project.complete_count == 2
    assignment_create(project=project, items=done, users=[team[0]], assigned_by=None)
    project.refresh_from_db()
    assert project.complete_count == 0
    assert_counters_exact(project)


def test_others_lose_their_leases_on_newly_assigned_items(project, team, reviewer):
    held = queue.next_items(project=project, user=reviewer, count=2)
    queue.next_items(project=project, user=team[0], count=1)
    assignment_create(project=project, items=held, users=[team[0]], assigned_by=None)
    assert not ItemLease.objects.filter(user=reviewer, item__in=held).exists()
    assert {i.pk for i in queue.next_items(project=project, user=reviewer, count=2)}.isdisjoint(
        {i.pk for i in held}
    )


def test_removing_the_last_assignee_returns_the_item_to_the_projects_overlap(project, team):
    (item,) = items(project, "t7")
    assignment_create(project=project, items=[item], users=team[:2], assigned_by=None)
    label(item, team[0])
    assert assignment_remove(project=project, users=[team[1]]) == 1
    item.refresh_from_db()
    assert (item.required_answers, item.needs_annotation) == (1, False)  # team[0] answered
    project.refresh_from_db()
    assert project.complete_count == 1
    assert assignment_remove(project=project, users=[team[0]], items=[item]) == 1
    item.refresh_from_db()
    assert (item.required_answers, item.needs_annotation) == (None, False)  # overlap 1, answered
    assert assignment_remove(project=project, users=[team[0]]) == 0
    assert_counters_exact(project)


def test_an_assignee_who_skipped_is_removed_and_the_item_completes(project, team):
    (item,) = items(project, "t8")
    assignment_create(project=project, items=[item], users=team[:2], assigned_by=None)
    label(item, team[0])
    label(item, team[1], skipped=True)
    item.refresh_from_db()
    assert item.needs_annotation
    skipped = {p.username: p.skipped for p in assignment_progress(project=project)}
    assert skipped == {"annie": 0, "ann2": 1}
    assignment_remove(project=project, users=[team[1]])
    item.refresh_from_db()
    assert not item.needs_annotation
    assert_counters_exact(project)


def test_progress_counts_answered_skipped_and_open_per_assignee(project, team):
    chosen = items(project, "t1", "t2", "t3")
    assignment_create(project=project, items=chosen, users=team[:2], assigned_by=None)
    label(chosen[0], team[0])
    label(chosen[1], team[0], skipped=True)
    rows = {
        p.username: (p.assigned, p.answered, p.skipped, p.open)
        for p in assignment_progress(project=project)
    }
    assert rows == {"annie": (3, 1, 1, 1), "ann2": (3, 0, 0, 3)}


def test_items_are_picked_by_external_id_one_per_line(project):
    picked = items_by_external_ids(project=project, text="t3\n\n  t1 \nt3\r\nt2\n")
    assert [i.external_id for i in picked] == ["t3", "t1", "t2"]


def test_unknown_external_ids_are_named_with_their_lines_and_nothing_is_assigned(
    project, annotator
):
    with pytest.raises(ValidationError) as caught:
        items_by_external_ids(project=project, text="t1\nnope\nt2\n\nT3\n")
    (message,) = caught.value.message_dict["external_ids"]
    assert "line 2: 'nope'" in message
    assert "line 5: 'T3'" in message
    assert "2 id(s)" in message
    assert not ItemAssignment.objects.exists()


def test_a_long_list_of_unknown_ids_is_summarised_and_long_ids_are_cut(project):
    text = "\n".join(["y" * 5000, *(f"missing-{n}" for n in range(30))])
    with pytest.raises(ValidationError) as caught:
        items_by_external_ids(project=project, text=text)
    (message,) = caught.value.message_dict["external_ids"]
    assert message.startswith("31 id(s) are not items of this project (line 1: 'yyy")
    assert "line 20: 'missing-18'" in message and "and 11 more" in message
    assert len(message) < 800


def test_random_open_items_are_unassigned_open_items_and_never_more_than_exist(
    project, annotator, reviewer
):
    label(items(project, "t0")[0], reviewer)  # complete
    assignment_create(
        project=project, items=items(project, "t1"), users=[annotator], assigned_by=None
    )
    drawn = items_random_open(project=project, count=5)
    assert len(drawn) == 5
    assert {"t0", "t1"}.isdisjoint({i.external_id for i in drawn})
    everything = items_random_open(project=project, count=100)
    assert len(everything) == 18
    with pytest.raises(ValidationError):
        items_random_open(project=project, count=0)
    assignment_create(project=project, items=everything, users=[annotator], assigned_by=None)
    with pytest.raises(ValidationError, match="no open, unassigned items"):
        items_random_open(project=project, count=1)


# --- Settings service -------------------------------------------------------------------------


def test_settings_update_changes_overlap_through_a_recount_and_saves_training(project, reviewer):
    for item in items(project, "t0", "t1"):
        label(item, reviewer)
    changed = project_settings_update(
        project=project,
        values={"overlap": 2, "instructions": "Be careful."},
        training={"exploration": 0.25},
    )
    assert set(changed) == {"overlap", "instructions", "exploration"}
    project.refresh_from_db()
    assert (project.overlap, project.complete_count, project.instructions) == (2, 0, "Be careful.")
    assert ProjectTraining.objects.get(project=project).exploration == 0.25


def test_weighted_consensus_is_refused_for_a_multi_label_project(db):
    multi = project_create(
        name="Topics", labeling_mode=Project.LabelingMode.MULTI, classes=["a", "b"]
    )
    with pytest.raises(ValidationError) as caught:
        project_settings_update(project=multi, values={"consensus": Project.Consensus.CROWDLAB})
    assert "consensus" in caught.value.message_dict
    multi.refresh_from_db()
    assert multi.consensus == Project.Consensus.MAJORITY


# --- Pages ------------------------------------------------------------------------------------

ROUTES = ["project_settings", "project_label_classes", "project_members", "project_assignments"]


@pytest.fixture
def admin_client(client, project_admin):
    client.force_login(project_admin)
    return client


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("method", ["get", "post"])
def test_annotators_and_reviewers_get_403_outsiders_404_and_anonymous_the_login(
    client, project, annotator, reviewer, outsider, route, method
):
    url = reverse(route, args=[project.pk])
    response = getattr(client, method)(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    for user, status in [(annotator, 403), (reviewer, 403), (outsider, 404)]:
        client.force_login(user)
        assert getattr(client, method)(url, {"action": "add"}).status_code == status, user
    assert Membership.objects.filter(project=project).count() == 2


@pytest.mark.parametrize("route", ROUTES)
def test_a_post_without_a_csrf_token_is_refused(project, project_admin, route):
    client = Client(enforce_csrf_checks=True)
    client.force_login(project_admin)
    url = reverse(route, args=[project.pk])
    response = client.post(url, {"action": "add", "add-user": "padmin", "add-role": "annotator"})
    assert response.status_code == 403
    assert b"CSRF" in response.content
    page = client.get(url)
    token = page.cookies["csrftoken"].value
    assert 'name="csrfmiddlewaretoken"' in page.content.decode()
    response = client.post(url, {"action": "unknown"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 400  # past the CSRF check, refused for the bad action


def test_the_project_page_links_to_the_admin_pages_only_for_project_admins(
    client, project, annotator, project_admin
):
    detail = reverse("project_detail", args=[project.pk])
    client.force_login(annotator)
    assert reverse("project_settings", args=[project.pk]) not in client.get(detail).content.decode()
    client.force_login(project_admin)
    html = client.get(detail).content.decode()
    for route in ROUTES:
        assert reverse(route, args=[project.pk]) in html


def test_the_settings_page_changes_the_overlap_and_recounts(admin_client, project, reviewer):
    for item in items(project, "t0", "t1", "t2"):
        label(item, reviewer)
    url = reverse("project_settings", args=[project.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    data = {
        "description": PAYLOAD,
        "instructions": "Read the whole review.",
        "overlap": "2",
        "serve_partial_first": "on",
        "review_threshold": "0.5",
        "review_model_confidence": "",
        "consensus": "majority",
        "quality_threshold": "0.8",
        "training-strategy": ProjectTraining._meta.get_field("strategy").default,
        "training-exploration": "0.2",
        "training-eval_share": "0.1",
        "training-suggestions": "off",
        "training-snapshot_every": "500",
        "training-split_validation": "0.1",
        "training-split_test": "0.2",
    }
    response = admin_client.post(url, data)
    assert response.status_code == 302 and response["Location"] == url
    assert flash(response) == [
        "Settings saved. Each item now needs 2 answers: 0 of 20 items are complete."
    ]
    project.refresh_from_db()
    assert (project.overlap, project.complete_count, project.review_model_confidence) == (
        2,
        0,
        None,
    )
    assert (project.review_threshold, project.quality_threshold) == (0.5, 0.8)
    training = ProjectTraining.objects.get(project=project)
    assert (training.exploration, training.eval_share, training.suggestions) == (0.2, 0.1, "off")
    assert (training.snapshot_every, training.split_test, training.split_stratified) == (
        500,
        0.2,
        False,
    )
    html = admin_client.get(url).content.decode()
    assert ESCAPED in html and PAYLOAD not in html


def test_the_settings_page_shows_errors_per_field_and_saves_nothing(admin_client, project):
    url = reverse("project_settings", args=[project.pk])
    response = admin_client.post(
        url,
        {
            "overlap": "0",
            "review_threshold": "7",
            "consensus": "nonsense",
            "quality_threshold": "abc",
            "training-strategy": "nope",
            "training-exploration": "2",
            "training-eval_share": "0.9",
            "training-suggestions": "off",
            "training-split_validation": "0.1",
            "training-split_test": "0.1",
        },
    )
    assert response.status_code == 400
    form, training_form = response.context["form"], response.context["training_form"]
    assert set(form.errors) == {"overlap", "review_threshold", "consensus", "quality_threshold"}
    assert set(training_form.errors) == {"strategy", "exploration", "eval_share"}
    assert "Nothing was saved" in page_text(response)
    project.refresh_from_db()
    assert (project.overlap, project.review_threshold) == (1, 0.66)
    assert not ProjectTraining.objects.filter(project=project).exists()


def test_the_members_page_adds_changes_and_removes_members(admin_client, project, project_admin):
    make_user("bea", email="bea@example.test")
    url = reverse("project_members", args=[project.pk])
    response = admin_client.post(
        url, {"action": "add", "add-user": "bea@example.test", "add-role": "reviewer"}
    )
    assert response.status_code == 302
    assert flash(response) == ["Added bea as reviewer."]
    bea = Membership.objects.get(project=project, user__username="bea")
    assert bea.role == Role.REVIEWER
    assert "bea" in page_text(admin_client.get(url))
    response = admin_client.post(url, {"action": "role", "membership": bea.pk, "role": "annotator"})
    assert response.status_code == 302
    bea.refresh_from_db()
    assert bea.role == Role.ANNOTATOR
    response = admin_client.post(url, {"action": "remove", "membership": bea.pk})
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=bea.pk).exists()


def test_the_members_page_refuses_bad_input_without_an_error_page(
    admin_client, project, project_admin, other_project, outsider
):
    url = reverse("project_members", args=[project.pk])
    response = admin_client.post(
        url, {"action": "add", "add-user": PAYLOAD, "add-role": "annotator"}
    )
    assert response.status_code == 400
    assert response.context["add_form"].errors["user"]
    assert ESCAPED in response.content.decode() and PAYLOAD not in response.content.decode()
    own = Membership.objects.get(project=project, user=project_admin)
    response = admin_client.post(url, {"action": "role", "membership": own.pk, "role": "annotator"})
    assert response.status_code == 400
    assert "at least one project admin" in page_text(response)
    response = admin_client.post(url, {"action": "remove", "membership": own.pk})
    assert response.status_code == 400
    for bad in [{"action": "role", "membership": "x"}, {"action": "remove"}, {"action": "zap"}, {}]:
        assert admin_client.post(url, bad).status_code == 400, bad
    theirs = Membership.objects.get(project=other_project, user=outsider)
    assert admin_client.post(url, {"action": "remove", "membership": theirs.pk}).status_code == 404
    assert Membership.objects.filter(pk=theirs.pk).exists()


def test_an_admin_who_removes_themselves_lands_on_their_project_list(
    admin_client, project, project_admin, reviewer
):
    membership_set_role(membership=Membership.objects.get(user=reviewer), role=Role.ADMIN)
    own = Membership.objects.get(project=project, user=project_admin)
    response = admin_client.post(
        reverse("project_members", args=[project.pk]), {"action": "remove", "membership": own.pk}
    )
    assert response.status_code == 302 and response["Location"] == reverse("project_list")
    assert not Membership.objects.filter(pk=own.pk).exists()
    assert admin_client.get(reverse("project_settings", args=[project.pk])).status_code == 404


def test_the_assignments_page_assigns_a_calibration_set_to_every_annotator(
    admin_client, project, team, reviewer, project_admin
):
    url = reverse("project_assignments", args=[project.pk])
    response = admin_client.post(
        url,
        {
            "action": "assign",
            "assign-source": "ids",
            "assign-external_ids": "t10\nt11\n",
            "assign-all_annotators": "on",
            "assign-users": [str(reviewer.pk)],
        },
    )
    assert response.status_code == 302, response.content.decode()
    assert flash(response) == ["Assigned 2 items to ann2, ann3, annie, rev (8 new assignments)."]
    assigned = set(ItemAssignment.objects.values_list("user__username", "item__external_id"))
    assert assigned == {(u, e) for u in ("annie", "ann2", "ann3", "rev") for e in ("t10", "t11")}
    assert ItemAssignment.objects.filter(assigned_by=project_admin).count() == 8
    text = page_text(admin_client.get(url))
    assert "annie 0 / 2" in text and "rev 0 / 2" in text


def test_the_assignments_page_draws_random_items_and_removes_assignments(
    admin_client, project, team
):
    url = reverse("project_assignments", args=[project.pk])
    response = admin_client.post(
        url,
        {
            "action": "assign",
            "assign-source": "random",
            "assign-count": "4",
            "assign-users": [str(team[1].pk)],
        },
    )
    assert response.status_code == 302
    assert ItemAssignment.objects.filter(user=team[1]).count() == 4
    response = admin_client.post(url, {"action": "unassign", "user": team[1].pk})
    assert response.status_code == 302
    assert not ItemAssignment.objects.exists()
    assert Item.objects.filter(project=project, required_answers__isnull=False).count() == 0
    assert_counters_exact(project)


def test_the_assignments_page_names_unknown_ids_and_assigns_nothing(admin_client, project, team):
    url = reverse("project_assignments", args=[project.pk])
    response = admin_client.post(
        url,
        {
            "action": "assign",
            "assign-source": "ids",
            "assign-external_ids": f"t1\n{PAYLOAD}\n",
            "assign-users": [str(team[0].pk)],
        },
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "line 2: &#x27;" + ESCAPED in html
    assert PAYLOAD not in html
    assert not ItemAssignment.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        {"action": "assign"},
        {"action": "assign", "assign-source": "ids", "assign-users": ["1"]},
        {
            "action": "assign",
            "assign-source": "random",
            "assign-count": "0",
            "assign-all_annotators": "on",
        },
        {
            "action": "assign",
            "assign-source": "random",
            "assign-count": "3",
            "assign-users": ["999999"],
        },
        {"action": "unassign", "user": "me"},
        {"action": "nothing"},
    ],
)
def test_the_assignments_page_answers_bad_input_with_400(admin_client, project, team, data):
    response = admin_client.post(reverse("project_assignments", args=[project.pk]), data)
    assert response.status_code == 400
    assert not ItemAssignment.objects.exists()


def test_an_outsider_cannot_be_assigned_through_the_page(admin_client, project, team, outsider):
    response = admin_client.post(
        reverse("project_assignments", args=[project.pk]),
        {
            "action": "assign",
            "assign-source": "random",
            "assign-count": "2",
            "assign-users": [str(outsider.pk)],
        },
    )
    assert response.status_code == 400
    assert not ItemAssignment.objects.exists()
