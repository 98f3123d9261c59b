"""Creating a project in a real browser, by keyboard where a person would use it: the New
project button, the class rows that htmx adds, moves and removes, Enter to create, then the
import and members steps."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from annotations.models import Membership, Project
from tests.conftest import make_user
from tests.test_browser import browser, expect, open_page  # noqa: F401 (fixtures)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("fast_passwords"),
]


def class_names_shown(page, count: int) -> list[str]:
    """The names in the class rows, once htmx has swapped in `count` rows."""
    names = page.locator("#class-rows input[name$='-name']")
    expect(names).to_have_count(count)
    return names.evaluate_all("inputs => inputs.map(i => i.value)")


def test_a_permitted_user_creates_a_project_by_keyboard_and_goes_on_to_import_and_members(
    open_page,  # noqa: F811 (fixtures from tests.test_browser)
    tmp_path,
):
    creator = make_user("creator")
    creator.user_permissions.add(Permission.objects.get(codename="add_project"))
    make_user("annie")
    page = open_page(creator, "/projects/")
    page.get_by_role("link", name="New project").click()
    expect(page.locator("h1")).to_have_text("New project")

    expect(page.locator("#id_name")).to_be_focused()
    page.keyboard.type("Pets")
    page.get_by_label("Multi-label classification").check()
    page.get_by_label("Name of class 1").fill("cat")
    page.keyboard.press("Tab")  # the colour
    page.keyboard.press("Tab")  # the key
    page.keyboard.type("c")
    page.get_by_label("Name of class 2").fill("dog")

    page.locator("#add-class").focus()
    page.keyboard.press("Enter")  # htmx swaps in three rows, the new one focused
    expect(page.get_by_label("Name of class 3")).to_be_focused()
    page.keyboard.type("bird")
    assert class_names_shown(page, 3) == ["cat", "dog", "bird"]  # what was typed stays
    page.get_by_role("button", name="Move class 3 up").click()
    expect(page.get_by_role("button", name="Move class 2 up")).to_be_focused()
    assert class_names_shown(page, 3) == ["cat", "bird", "dog"]
    page.locator("#add-class").click()
    expect(page.get_by_label("Name of class 4")).to_be_focused()
    page.keyboard.type("fish")
    page.get_by_role("button", name="Remove class 4").click()
    assert class_names_shown(page, 3) == ["cat", "bird", "dog"]
    assert page.get_by_label("Key of class 1").input_value() == "c"

    page.get_by_label("Instructions").fill("Tick every animal the text mentions.")
    page.get_by_label("Name of class 3").focus()
    page.screenshot(path=str(tmp_path / "new-project.png"), full_page=True)
    page.keyboard.press("Enter")  # Enter in a field creates the project
    expect(page.locator("h1")).to_have_text("Import items into Pets")
    expect(page.locator(".setup-steps [aria-current=step]")).to_have_text("2. Import items")
    page.screenshot(path=str(tmp_path / "import-step.png"))

    project = Project.objects.get(name="Pets")
    assert project.labeling_mode == "multi"
    assert project.instructions == "Tick every animal the text mentions."
    assert list(project.label_classes.order_by("order").values_list("name", "key")) == [
        ("cat", "c"),
        ("bird", ""),
        ("dog", ""),
    ]
    assert Membership.objects.get(project=project, user=creator).role == "admin"

    page.get_by_role("link", name="Skip for now: add members").click()
    expect(page.locator(".setup-steps [aria-current=step]")).to_have_text("3. Members")
    page.get_by_label("Username or email").fill("annie")
    page.keyboard.press("Enter")
    expect(page.locator(".messages")).to_contain_text("Added annie as annotator.")
    page.get_by_role("link", name="Done: open the project").click()
    expect(page.locator("h1")).to_contain_text("Pets")
    assert set(project.memberships.values_list("user__username", "role")) == {
        ("creator", "admin"),
        ("annie", "annotator"),
    }


def test_duplicate_class_names_are_shown_on_the_row_and_nothing_is_created(
    open_page,  # noqa: F811
    tmp_path,
):
    creator = make_user("creator")
    creator.user_permissions.add(Permission.objects.get(codename="add_project"))
    page = open_page(creator, "/projects/new/")
    page.get_by_label("Name", exact=True).fill("Pets")
    page.get_by_label("Name of class 1").fill("cat")
    page.get_by_label("Name of class 2").fill("cat")
    page.get_by_role("button", name="Create project").last.click()
    expect(page.locator(".form-errors").first).to_contain_text("Nothing was created")
    expect(page.locator(".class-row").nth(1)).to_contain_text("Class 1 is already named 'cat'.")
    expect(page.get_by_label("Name of class 2")).to_be_focused()  # to correct it at once
    page.screenshot(path=str(tmp_path / "refused.png"))
    assert not Project.objects.exists()
