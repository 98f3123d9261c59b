"""The annotate page's model panel: what the model can do yet, and which classes it still
needs examples of, rendered by the server from the current version (the websocket keeps it
current: tests/test_worker.py, tests/test_browser.py)."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from annotations.models import Item, Membership
from annotations.services import project_create
from curation.services import train_project_once
from tests.conftest import add_text_items, make_user, submit_handed_out


@pytest.fixture(autouse=True)
def _models_in_tmp(data_dir):
    return data_dir


@pytest.fixture
def annie(annotator):
    return annotator


def needs_line(page: str) -> tuple[bool, str]:
    """(whether the line is hidden, its text without tags)."""
    match = re.search(r"<p class=\"model-needs\" data-model-needs( hidden)?>(.*?)</p>", page)
    assert match, "the panel has no line for the classes the model needs"
    return bool(match.group(1)), re.sub(r"<[^>]+>", "", match.group(2))


def label_and_train(project, user, names: list[str]) -> None:
    items = Item.objects.filter(project=project, needs_annotation=True).order_by("id")
    for item, name in zip(items, names, strict=False):
        submit_handed_out(item=item, annotator=user, labels=[name], client_uuid=uuid.uuid4())
    train_project_once(project)


def panel(client, project) -> str:
    page = client.get(reverse("annotate", args=[project.pk])).content.decode()
    return page[page.index('id="model"') : page.index("</section>", page.index('id="model"'))]


def test_before_any_label_the_panel_asks_for_examples_of_every_class(client, project, annie):
    client.force_login(annie)

    hidden, text = needs_line(panel(client, project))

    assert not hidden
    assert text == ("The model needs examples of: positive (0/3), negative (0/3), neutral (0/3)")


def test_the_panel_counts_each_class_up_to_three_then_hides_the_line(client, project, annie):
    client.force_login(annie)

    label_and_train(project, annie, ["positive"])
    page = panel(client, project)
    assert "Learning: the queue serves typical items until two classes have labels." in page
    assert needs_line(page)[1].endswith("positive (1/3), negative (0/3), neutral (0/3)")

    label_and_train(project, annie, ["negative", "positive"])
    page = panel(client, project)
    assert "Ranking the queue; suggestions start once every class has a label." in page
    assert needs_line(page) == (
        False,
        "The model needs examples of: positive (2/3), negative (1/3), neutral (0/3)",
    )

    label_and_train(project, annie, ["neutral", "positive", "negative", "negative", "neutral"])
    page = panel(client, project)
    assert "Ranking the queue: most informative items first." in page
    assert needs_line(page) == (False, "The model needs examples of: neutral (2/3)")

    label_and_train(project, annie, ["neutral"])
    assert needs_line(panel(client, project))[0] is True  # every class has 3: hidden


def test_a_long_list_of_classes_is_cut_short(client, db):
    project = project_create(name="Many", classes=[f"class{i:02d}" for i in range(15)])
    add_text_items(project, ["some text"])
    user = make_user("panel-ben")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
    client.force_login(user)

    text = needs_line(panel(client, project))[1]

    assert text.endswith("class11 (0/3) and 3 more")
    assert "class12" not in text
