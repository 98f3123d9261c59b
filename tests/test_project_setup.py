"""Creating a project in the app: who may (site admins and users given "Can add project"), the
New project page with its class rows, validation that creates nothing, and the steps after it
(import, then members). The service behind it is the one Django admin uses too."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotations.models import LabelClass, Membership, Project
from annotations.project_setup import ClassSpec, class_errors, project_create
from tests.conftest import make_user
from tests.test_admin import form_data

Role = Membership.Role
NEW = "/projects/new/"


def allowed_user(username: str = "creator"):
    """A plain user a site admin gave the "Can add project" permission."""
    user = make_user(username)
    user.user_permissions.add(Permission.objects.get(codename="add_project"))
    return user


def new_project_body(name: str = "Pets", classes=(("cat", "#123456", "c"), ("dog", "", "d"))):
    body = {
        "name": name,
        "item_kind": "text",
        "labeling_mode": "single",
        "description": "Which pet is it?",
        "instructions": "Pick the animal the text is about.",
        "overlap": "2",
        "class-count": str(len(classes)),
    }
    for i, (cname, color, key) in enumerate(classes):
        body |= {f"class-{i}-name": cname, f"class-{i}-color": color, f"class-{i}-key": key}
    return body


@pytest.fixture
def creator(db):
    return allowed_user()


# --- Who may ----------------------------------------------------------------------------------


def test_a_user_given_the_permission_sees_the_new_project_button_and_others_do_not(
    client, creator, annotator
):
    client.force_login(creator)
    assert 'href="/projects/new/"' in client.get("/projects/").content.decode()
    client.force_login(annotator)
    listing = client.get("/projects/").content.decode()
    assert "New project" not in listing and "/projects/new/" not in listing


def test_a_user_without_the_permission_is_refused_the_page_and_creates_nothing(client, annotator):
    client.force_login(annotator)
    assert client.get(NEW).status_code == 403
    assert client.post(NEW, new_project_body()).status_code == 403
    assert not Project.objects.filter(name="Pets").exists()


def test_an_anonymous_visitor_is_sent_to_the_login_page(client, db):
    response = client.get(NEW)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert client.post(NEW, new_project_body()).status_code == 302
    assert not Project.objects.exists()


def test_site_admins_and_members_of_a_group_with_the_permission_may_create_projects(
    client, superuser
):
    client.force_login(superuser)
    assert client.get(NEW).status_code == 200
    group = Group.objects.create(name="Project creators")
    group.permissions.add(Permission.objects.get(codename="add_project"))
    staffer = make_user("lead")
    staffer.groups.add(group)
    client.force_login(staffer)
    assert client.post(NEW, new_project_body("Team pets")).status_code == 302
    assert Membership.objects.get(project__name="Team pets", user=staffer).role == Role.ADMIN


# --- The flow ---------------------------------------------------------------------------------


def test_a_new_project_is_created_with_its_classes_and_leads_to_import_then_members(
    client, creator
):
    client.force_login(creator)
    page = client.get(NEW).content.decode()
    assert page.count('name="class-') >= 6  # two empty rows to start with
    response = client.post(NEW, new_project_body())
    project = Project.objects.get(name="Pets")
    assert response.status_code == 302
    assert response["Location"] == f"/projects/{project.pk}/import/?setup=1"
    assert (project.item_kind, project.labeling_mode, project.overlap) == ("text", "single", 2)
    assert project.instructions == "Pick the animal the text is about."
    classes = list(project.label_classes.order_by("order").values_list("name", "color", "key"))
    assert classes == [("cat", "#123456", "c"), ("dog", "#e8590c", "d")]  # palette for "dog"
    assert Membership.objects.get(project=project, user=creator).role == Role.ADMIN

    landing = client.get(response["Location"])
    assert landing.status_code == 200
    assert 'aria-current="step">2. Import items' in landing.content.decode()
    csv = SimpleUploadedFile("pets.csv", b"id,text\n1,a cat sleeps\n2,the dog barks\n")
    imported = client.post(response["Location"], {"file": csv, "text_field": "text"})
    assert imported.status_code == 302
    assert imported["Location"] == f"/projects/{project.pk}/members/?setup=1"
    project.refresh_from_db()
    assert project.item_count == 2

    newcomer = make_user("newcomer")
    added = client.post(
        imported["Location"], {"action": "add", "add-user": "newcomer", "add-role": "annotator"}
    )
    assert added["Location"] == f"/projects/{project.pk}/members/?setup=1"
    assert Membership.objects.get(project=project, user=newcomer).role == Role.ANNOTATOR
    members = client.get(added["Location"]).content.decode()
    assert 'aria-current="step">3. Members' in members
    assert f'href="/projects/{project.pk}/"' in members  # "Done: open the project"


def test_skipping_the_import_leads_to_the_members_step(client, creator):
    client.force_login(creator)
    client.post(NEW, new_project_body())
    project = Project.objects.get(name="Pets")
    page = client.get(f"/projects/{project.pk}/import/?setup=1").content.decode()
    assert f'href="/projects/{project.pk}/members/?setup=1"' in page


def test_the_label_classes_page_is_reachable_from_the_new_projects_settings(client, creator):
    client.force_login(creator)
    client.post(NEW, new_project_body())
    project = Project.objects.get(name="Pets")
    settings_page = client.get(reverse("project_settings", args=[project.pk])).content.decode()
    classes_url = reverse("project_label_classes", args=[project.pk])
    assert f'href="{classes_url}"' in settings_page
    assert client.get(classes_url).status_code == 200


def test_an_image_multi_label_project_keeps_its_kind_and_mode(client, creator):
    client.force_login(creator)
    body = new_project_body("Photos") | {"item_kind": "image", "labeling_mode": "multi"}
    assert client.post(NEW, body).status_code == 302
    project = Project.objects.get(name="Photos")
    assert (project.item_kind, project.labeling_mode) == ("image", "multi")
    assert "zip" in client.get(f"/projects/{project.pk}/import/?setup=1").content.decode()


# --- Validation: nothing is created -----------------------------------------------------------


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ((("cat", "", ""), ("cat", "", "")), "Class 1 is already named &#x27;cat&#x27;."),
        ((("cat", "", "k"), ("dog", "", "K")), "Class 1 already uses the key &#x27;k&#x27;."),
        ((("cat", "red", ""),), "Use a colour like #4f7cff."),
        ((("cat", "", "?"),), "A keyboard key is one lowercase letter or digit."),
    ],
    ids=["same name", "same key", "bad colour", "bad key"],
)
def test_bad_classes_are_refused_on_their_row_and_nothing_is_created(
    client, creator, classes, message
):
    client.force_login(creator)
    response = client.post(NEW, new_project_body(classes=classes))
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert "Nothing was created" in page
    assert not Project.objects.exists() and not LabelClass.objects.exists()
    assert 'value="Pets"' in page  # what was typed stays


def test_a_project_without_classes_or_with_a_taken_name_is_refused(client, creator, project):
    client.force_login(creator)
    response = client.post(NEW, new_project_body(classes=(("", "#123456", ""),)))
    assert response.status_code == 400
    assert "Add at least one label class." in response.content.decode()
    response = client.post(NEW, new_project_body(name="Sentiment"))
    assert response.status_code == 400
    assert "A project with this name already exists." in response.content.decode()
    assert list(Project.objects.values_list("name", flat=True)) == ["Sentiment"]


def test_blank_rows_are_left_out(client, creator):
    client.force_login(creator)
    body = new_project_body(classes=(("", "#111111", ""), ("cat", "", ""), (" ", "", "")))
    assert client.post(NEW, body).status_code == 302
    assert Project.objects.get(name="Pets").class_names() == ["cat"]


# --- The class rows ---------------------------------------------------------------------------


def rows_in(html: str) -> list[str]:
    return re.findall(r'name="class-\d+-name" id="[^"]+" value="([^"]*)"', html)


def test_the_row_buttons_add_remove_and_move_rows_keeping_what_was_typed(client, creator):
    client.force_login(creator)
    body = new_project_body(classes=(("cat", "#111111", "c"), ("dog", "#222222", "d")))
    htmx = {"HTTP_HX_REQUEST": "true"}

    added = client.post(NEW, body | {"row": "add"}, **htmx).content.decode()
    assert "<h1>" not in added  # only the rows come back to htmx
    assert rows_in(added) == ["cat", "dog", ""]
    assert 'name="class-2-name"' in added and "autofocus" in added  # the new row has focus

    moved = client.post(NEW, body | {"row": "up-1"}, **htmx).content.decode()
    assert rows_in(moved) == ["dog", "cat"]
    # At the top its "up" button is disabled: the focus goes to its "down" button.
    assert re.search(r'value="down-0"[^>]*autofocus', moved)
    assert 'value="#222222"' in moved.split('name="class-1-name"')[0]  # its colour moved too

    removed = client.post(NEW, body | {"row": "remove-0"}, **htmx).content.decode()
    assert rows_in(removed) == ["dog"]

    # Without htmx the whole page comes back, the project's fields as typed.
    page = client.post(NEW, body | {"row": "down-0"}).content.decode()
    assert "<h1>New project</h1>" in page and 'value="Pets"' in page
    assert rows_in(page) == ["dog", "cat"]
    assert not Project.objects.exists()


# --- The service ------------------------------------------------------------------------------


def test_project_create_makes_its_creator_admin_through_the_members_service(creator):
    project = project_create(
        name="Pets", classes=["cat", ClassSpec("dog", key="D")], creator=creator
    )
    assert Membership.objects.get(project=project, user=creator).role == Role.ADMIN
    assert list(project.label_classes.values_list("key", flat=True)) == ["", "d"]


def test_project_create_writes_nothing_when_its_creator_cannot_be_added(creator):
    creator.is_active = False
    creator.save(update_fields=["is_active"])
    with pytest.raises(ValidationError) as refused:
        project_create(name="Pets", classes=["cat"], creator=creator)
    assert "user" in refused.value.message_dict
    assert not Project.objects.exists() and not LabelClass.objects.exists()


def test_class_errors_name_the_row_and_field_of_each_problem():
    problems = class_errors(
        [ClassSpec("a", key="x"), ClassSpec("a"), ClassSpec("b", key="x"), ClassSpec("c", "#zz")]
    )
    assert problems == [
        {},
        {"name": ["Class 1 is already named 'a'."]},
        {"key": ["Class 1 already uses the key 'x'."]},
        {"color": ["Use a colour like #4f7cff."]},
    ]


# --- Django admin uses the same service ----------------------------------------------------


def test_a_project_created_in_django_admin_gets_its_classes_keys_and_members_in_one_go(
    client, superuser
):
    client.force_login(superuser)
    url = reverse("admin:annotations_project_add")
    data = form_data(client.get(url))
    annie = make_user("annie")
    data |= {
        "name": "  Birds  ",
        "label_classes-TOTAL_FORMS": "2",
        "label_classes-0-name": "owl",
        "label_classes-0-key": "o",
        "label_classes-0-color": "#123456",
        "label_classes-0-order": "1",
        "label_classes-1-name": "crow",
        "label_classes-1-color": "#654321",
        "label_classes-1-order": "0",
        "memberships-TOTAL_FORMS": "2",
        "memberships-0-user": str(annie.pk),
        "memberships-0-role": "annotator",
        "memberships-1-user": str(superuser.pk),  # the creator, listed with a role of their own
        "memberships-1-role": "reviewer",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    project = Project.objects.get(name="Birds")
    assert list(project.label_classes.order_by("order").values_list("name", "key", "order")) == [
        ("crow", "", 0),
        ("owl", "o", 1),
    ]
    assert dict(project.memberships.values_list("user__username", "role")) == {
        "annie": "annotator",
        "root": "reviewer",
    }
