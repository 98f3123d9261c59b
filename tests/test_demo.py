"""The demo (`manage.py demo`): real data from dependencies, printed logins that work, and a
second run that adds nothing."""

from __future__ import annotations

import io
import json
import re
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from PIL import Image

from annotations import demo
from annotations.models import Item, LabelClass, Membership, Project

User = get_user_model()
USERNAMES = [name for name, _, _ in demo.DEMO_USERS]


@pytest.fixture
def demo_env(db, settings, tmp_path):
    """A throwaway data directory and media root, and DEBUG on as the demo requires."""
    settings.DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DEBUG = True
    # Hashing stays real but cheap: the demo sets four passwords on every run.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return tmp_path


def _counts() -> dict[str, int]:
    return {
        "projects": Project.objects.count(),
        "classes": LabelClass.objects.count(),
        "items": Item.objects.count(),
        "users": User.objects.count(),
        "memberships": Membership.objects.count(),
    }


def _printed_passwords(output: str) -> dict[str, str]:
    found = dict(re.findall(r"^\s+(admin|annotator1|annotator2|reviewer)\s+(\S+)\s", output, re.M))
    assert sorted(found) == sorted(USERNAMES), output
    return found


def test_seeding_twice_adds_nothing_and_keeps_the_passwords(demo_env):
    first = demo.seed_demo()
    after_first = _counts()
    stored = json.loads(first.credentials_path.read_text())
    images = sorted((demo_env / "media").rglob("*.png"))

    second = demo.seed_demo()

    assert after_first == {
        "projects": 2,
        "classes": 13,
        "items": 1797 + demo.TWEETS_SAMPLE,
        "users": 4,
        "memberships": 8,
    }
    assert _counts() == after_first
    assert second.created_items == {demo.DIGITS_PROJECT: 0, demo.TWEETS_PROJECT: 0}
    assert sorted((demo_env / "media").rglob("*.png")) == images  # no stray files either
    assert {a.username: a.password for a in second.accounts} == stored
    assert {a.username: a.password for a in first.accounts} == stored
    assert stat.S_IMODE(first.credentials_path.stat().st_mode) == 0o600
    for project in Project.objects.all():
        assert project.item_count == project.items.count()


def test_a_run_completes_what_an_interrupted_or_damaged_demo_lacks(demo_env):
    demo.seed_demo()
    digits = Project.objects.get(name=demo.DIGITS_PROJECT)
    gone = list(digits.items.order_by("id").values_list("external_id", flat=True)[:25])
    digits.items.filter(external_id__in=gone).delete()
    Project.objects.filter(pk=digits.pk).update(item_count=1797 - 25)
    User.objects.filter(username="annotator2").delete()
    Membership.objects.filter(user__username="annotator1").update(role=Membership.Role.ADMIN)

    result = demo.seed_demo()

    assert result.created_items == {demo.DIGITS_PROJECT: 25, demo.TWEETS_PROJECT: 0}
    assert digits.items.filter(external_id__in=gone).count() == 25
    digits.refresh_from_db()
    assert digits.item_count == digits.items.count() == 1797
    for username in ("annotator1", "annotator2"):
        assert set(
            Membership.objects.filter(user__username=username).values_list("role", flat=True)
        ) == {Membership.Role.ANNOTATOR}


def test_every_printed_account_can_log_in_with_its_demo_role(demo_env):
    out = io.StringIO()
    call_command("demo", "--no-serve", stdout=out)
    output = out.getvalue()
    passwords = _printed_passwords(output)
    assert "http://127.0.0.1:8000/" in output

    for username, password in passwords.items():
        client = Client()
        response = client.post(reverse("login"), {"username": username, "password": password})
        assert response.status_code == 302, username
        assert response.url == reverse("project_list")
        page = client.get(reverse("project_list")).content.decode()
        assert demo.DIGITS_PROJECT in page and "Airline tweets" in page
    assert not Client().login(username="annotator1", password="wrong-password")

    # A second run prints the same passwords, and they still work.
    again = io.StringIO()
    call_command("demo", "--no-serve", stdout=again)
    assert _printed_passwords(again.getvalue()) == passwords
    assert Client().login(username="reviewer", password=passwords["reviewer"])

    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert not User.objects.filter(username__in=USERNAMES[1:], is_staff=True).exists()
    for project in Project.objects.all():
        roles = set(project.memberships.values_list("user__username", "role"))
        assert roles == {
            ("admin", "admin"),
            ("annotator1", "annotator"),
            ("annotator2", "annotator"),
            ("reviewer", "reviewer"),
        }


def test_the_digits_project_serves_1797_pngs_to_members_only(demo_env):
    demo.seed_demo()
    project = Project.objects.get(name=demo.DIGITS_PROJECT)
    assert project.item_kind == Project.ItemKind.IMAGE
    assert list(project.label_classes.values_list("name", "key")) == [
        (str(d), str(d)) for d in range(10)
    ]
    items = project.items.all()
    assert items.count() == project.item_count == 1797
    assert set(items.values_list("image_format", "image_width", "image_height")) == {
        ("PNG", 64, 64)
    }
    # The true digit is not shown to annotators; evaluation reads it from scikit-learn.
    assert all(set(m) == {"source", "index"} for m in items.values_list("metadata", flat=True))
    truth = demo.digits_ground_truth()
    assert set(truth) == set(items.values_list("external_id", flat=True))

    item = items.get(external_id="digits/0000.png")
    url = reverse("item_image", args=[project.pk, item.pk])
    member = Client()
    member.force_login(User.objects.get(username="annotator1"))
    response = member.get(url)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    body = b"".join(response.streaming_content)
    with Image.open(io.BytesIO(body)) as image:
        assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "L")
        # Dark ink on white: the corners of a digit are paper.
        assert image.getpixel((0, 0)) == 255
        assert min(image.tobytes()) < 64

    stranger = Client()
    stranger.force_login(User.objects.create_user("stranger", password="x-stranger-pw-1"))
    assert stranger.get(url).status_code == 404


def test_the_text_project_holds_real_airline_tweets_and_their_classes(demo_env):
    demo.seed_demo()
    project = Project.objects.get(name=demo.TWEETS_PROJECT)
    assert project.item_kind == Project.ItemKind.TEXT
    assert not project.is_multi_label
    assert list(project.label_classes.values_list("name", flat=True)) == [
        "negative",
        "neutral",
        "positive",
    ]
    texts = dict(project.items.values_list("external_id", "text"))
    assert len(texts) == demo.TWEETS_SAMPLE
    assert len(set(texts.values())) == demo.TWEETS_SAMPLE
    assert all(t.strip() and re.search(r"@\w+", t) for t in texts.values())
    assert not any("&amp;" in t for t in texts.values())
    assert sum(len(t) for t in texts.values()) / len(texts) > 40  # sentences, not tokens

    # Every item has a crowd label in the source data, and the sample keeps all three classes.
    truth = {t.external_id: t for t in demo.airline_tweets()}
    assert len(truth) > 10_000
    assert all(truth[eid].text == text for eid, text in texts.items())
    assert {truth[eid].label for eid in texts} == {"negative", "neutral", "positive"}


def test_the_demo_refuses_to_run_without_debug(demo_env, settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG=1"):
        call_command("demo", "--no-serve", stdout=io.StringIO())
    assert _counts()["projects"] == 0
    assert not (demo_env / "data" / demo.CREDENTIALS_FILE).exists()


def test_a_damaged_credentials_file_is_named_and_nothing_is_seeded(demo_env):
    path = demo_env / "data" / demo.CREDENTIALS_FILE
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(CommandError, match=re.escape(str(path))):
        call_command("demo", "--no-serve", stdout=io.StringIO())
    assert _counts() == {"projects": 0, "classes": 0, "items": 0, "users": 0, "memberships": 0}
    assert path.read_text() == "{not json"


SQLITE_ROUND = """
import uuid
from django.contrib.auth import get_user_model
from annotations import queue
from annotations.models import Annotation, Membership, Project
from annotations.services import annotation_submit, project_create
from tests.conftest import add_text_items
from curation.dataset_versions import version_create
from curation.dashboard import dashboard_data, dashboard_refresh

project = project_create(name="On SQLite", classes=["yes", "no"])
add_text_items(project, [f"text {i}" for i in range(6)])
user = get_user_model().objects.create_user("ann", password="x")
Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
for n, item in enumerate(queue.next_items(project=project, user=user, count=3)):
    sid = uuid.uuid4()
    annotation_submit(item=item, annotator=user, labels=["yes"], client_uuid=sid)
    annotation_submit(item=item, annotator=user, labels=["yes"], client_uuid=sid)  # a resend
    if n == 0:  # an edit
        annotation_submit(item=item, annotator=user, labels=["no"], client_uuid=uuid.uuid4())
project.refresh_from_db()
version = version_create(project, name="first")
dashboard_refresh(project)
print(Annotation.objects.count(), project.complete_count, version.status, version.labelled,
      dashboard_data(project)["progress"]["complete"])
"""


def test_the_embedded_database_takes_answers_versions_and_the_dashboard(tmp_path):
    """The demo runs on SQLite, which CI's PostgreSQL suite never touches: answers (first,
    resent, edited), a dataset version and the dashboard's refresh, in a process of its own on
    a fresh SQLite file. (PostgreSQL-only SQL in the submission once broke the demo's labels.)"""
    import os
    import subprocess
    import sys

    from django.conf import settings

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS"))}
    env.update(DEBUG="1", DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="dataprep_site.settings")
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=settings.BASE_DIR)
    done = subprocess.run(
        [*manage, "shell", "-c", SQLITE_ROUND],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1].split() == ["3", "3", "ready", "3", "3"]
    assert (tmp_path / "dataprep.sqlite3").exists()
