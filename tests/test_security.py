"""User text is only ever shown as text, logins never redirect off the site, images are served
with their real type, and production settings pass Django's deployment checks."""

from __future__ import annotations

import io
import os
import re
import secrets
import string
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.urls import reverse
from PIL import Image

from annotations import queue
from annotations.models import Item, Membership, Project
from annotations.review import review_flag
from annotations.services import add_items_counted, project_create
from tests.conftest import PASSWORD, make_user, submit_handed_out

pytestmark = pytest.mark.usefixtures("fast_passwords")
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = '<script>alert("x")</script>'
IMG = "<img src=x onerror=alert(1)>"
PAYLOADS = (SCRIPT, IMG)


def assert_shown_as_text(html: str, where: str) -> None:
    """No payload survives as markup, and each is visibly there, escaped."""
    for payload in PAYLOADS:
        assert payload not in html, f"{where}: {payload!r} rendered as HTML"
    assert "<script>alert" not in html and "onerror=alert(1)>" not in html.replace("&gt;", ""), (
        where
    )
    assert "&lt;script&gt;alert(" in html or "&lt;img src=x onerror=alert(1)&gt;" in html, (
        f"{where}: the payload text is not shown at all, so this check proves nothing"
    )


@pytest.fixture
def evil(db):
    """A project where every user-supplied string is an HTML payload, one answer in history."""
    project = project_create(
        name=f"Team {SCRIPT}",
        description=f"About {IMG} and {SCRIPT}",
        instructions=f"Read this {SCRIPT}\nthen {IMG}",
        classes=[SCRIPT, IMG, "plain"],
    )
    items = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=f"{IMG}-{i}",
                text=f"{SCRIPT} body {i} {IMG}",
                priority=1 - i / 100,
            )
            for i in range(6)
        ]
    )
    add_items_counted(project, len(items))
    project.refresh_from_db()
    user = make_user("annie")
    Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
    (first,) = queue.next_items(project=project, user=user, count=1)
    first.project = project
    submit_handed_out(item=first, annotator=user, labels=[SCRIPT], client_uuid=uuid.uuid4())
    return project, user, first


def test_the_project_list_shows_names_and_descriptions_as_text(client, evil):
    project, user, _ = evil
    client.force_login(user)
    html = client.get(reverse("project_list")).content.decode()
    assert "Team &lt;script&gt;" in html
    assert "About &lt;img src=x onerror=alert(1)&gt;" in html
    assert_shown_as_text(html, "project list")


def test_the_project_page_shows_every_field_as_text(client, evil):
    project, user, _ = evil
    client.force_login(user)
    html = client.get(reverse("project_detail", args=[project.pk])).content.decode()
    assert "Read this &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;<br>then &lt;img" in html
    assert_shown_as_text(html, "project detail")


def test_the_annotate_page_shows_items_labels_instructions_and_history_as_text(client, evil):
    project, user, _ = evil
    client.force_login(user)
    html = client.get(reverse("annotate", args=[project.pk])).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; body 1" in html  # the item
    assert 'value="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"' in html  # a label choice
    history = html[html.index('id="history"') :]
    assert "&lt;img src=x onerror=alert(1)&gt;-0" in history  # the answered item's id
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in history  # its label
    assert_shown_as_text(html, "annotate page")


def test_the_htmx_partials_show_items_and_history_as_text(client, evil):
    project, user, answered = evil
    client.force_login(user)
    htmx = {"HTTP_HX_REQUEST": "true"}
    cards = client.get(reverse("annotate_next", args=[project.pk]), {"count": 2}, **htmx)
    assert cards.status_code == 200
    assert_shown_as_text(cards.content.decode(), "annotate_next")

    reopened = client.get(reverse("annotate_item", args=[project.pk, answered.pk]), **htmx)
    assert reopened.status_code == 200
    assert_shown_as_text(reopened.content.decode(), "annotate_item (HTMX)")
    full = client.get(reverse("annotate_item", args=[project.pk, answered.pk]))
    assert_shown_as_text(full.content.decode(), "annotate_item (page)")

    shown = re.findall(r'data-item-id="(\d+)"', cards.content.decode())
    submitted = client.post(
        reverse("annotate_submit", args=[project.pk]),
        {
            "item": shown[0],
            "labels": [IMG],
            "client_uuid": str(uuid.uuid4()),
            "want": "2",
            "exclude": ",".join(shown[1:]),
        },
        **htmx,
    )
    assert submitted.status_code == 200, submitted.content
    html = submitted.content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;</span>" in html  # the new answer in the history
    assert_shown_as_text(html, "annotate_submit")


def test_the_import_page_shows_the_project_name_as_text(client, evil):
    project, user, _ = evil
    url = reverse("project_import", args=[project.pk])
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    assert_shown_as_text(response.content.decode(), "import page")


def test_the_admin_shows_user_text_as_text(client, evil):
    project, _, answered = evil
    admin = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
    client.force_login(admin)
    pages = [
        reverse("admin:annotations_project_changelist"),
        reverse("admin:annotations_project_change", args=[project.pk]),
        reverse("admin:annotations_item_changelist"),
        reverse("admin:annotations_item_change", args=[answered.pk]),
        reverse("admin:annotations_annotation_changelist"),
        reverse("admin:annotations_labelclass_changelist"),
        reverse("admin:annotations_membership_changelist"),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        for payload in PAYLOADS:
            assert payload not in html, f"{url}: {payload!r} rendered as HTML"
        assert "&lt;script&gt;" in html or "&lt;img" in html, f"{url} shows no payload at all"


# --- Redirects after login --------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:evil.example",
        " //evil.example",
        "https://testserver.evil.example/",
    ],
)
def test_next_after_login_never_leaves_the_site(client, annotator, target):
    response = client.post(
        reverse("login") + "?next=" + target,
        {"username": "annie", "password": PASSWORD, "next": target},
    )
    assert response.status_code == 302
    location = response["Location"]
    assert location == reverse("project_list"), f"next={target!r} sent the user to {location!r}"
    # Already logged in: the login page sends them on, still never off-site.
    again = client.get(reverse("login"), {"next": target})
    assert again.status_code == 302
    assert again["Location"] == reverse("project_list")


def test_a_local_next_after_login_is_followed(client, project, annotator):
    target = reverse("annotate", args=[project.pk])
    response = client.post(
        reverse("login"), {"username": "annie", "password": PASSWORD, "next": target}
    )
    assert response["Location"] == target


def test_the_login_page_shows_next_as_text(client, db):
    html = client.get(reverse("login"), {"next": f"/x{SCRIPT}"}).content.decode()
    assert SCRIPT not in html


# --- Images and headers -----------------------------------------------------------------------


def image_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), (10, 200, 10)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_the_image_view_sends_the_real_type_and_nosniff(
    client, settings, tmp_path, project, annotator, fmt, content_type
):
    settings.MEDIA_ROOT = tmp_path
    item = Item(project=project, external_id=f"img.{fmt}", image_format=fmt)
    item.image.save(f"a.{fmt.lower()}", ContentFile(image_bytes(fmt)), save=False)
    item.save()
    client.force_login(annotator)
    response = client.get(reverse("item_image", args=[project.pk, item.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert b"".join(response.streaming_content) == image_bytes(fmt)


def test_a_file_of_an_unlisted_format_is_never_served(
    client, settings, tmp_path, project, annotator
):
    settings.MEDIA_ROOT = tmp_path
    item = Item(project=project, external_id="pic.svg", image_format="SVG")
    item.image.save("pic.svg", ContentFile(b"<svg onload=alert(1)/>"), save=False)
    item.save()
    client.force_login(annotator)
    assert client.get(reverse("item_image", args=[project.pk, item.pk])).status_code == 404


def test_a_text_item_has_no_image(client, project, annotator):
    client.force_login(annotator)
    item = project.items.first()
    assert client.get(reverse("item_image", args=[project.pk, item.pk])).status_code == 404


def test_an_image_whose_file_is_gone_is_not_found(client, settings, tmp_path, project, annotator):
    settings.MEDIA_ROOT = tmp_path
    item = Item(project=project, external_id="gone.png", image_format="PNG")
    item.image.save("gone.png", ContentFile(image_bytes("PNG")), save=False)
    item.save()
    Path(item.image.path).unlink()
    client.force_login(annotator)
    assert client.get(reverse("item_image", args=[project.pk, item.pk])).status_code == 404


def test_pages_forbid_framing_and_sniffing(client, annotator):
    client.force_login(annotator)
    response = client.get(reverse("project_list"))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_the_session_cookie_is_http_only(client, annotator):
    client.post(reverse("login"), {"username": "annie", "password": PASSWORD})
    assert client.cookies["sessionid"]["httponly"]


# --- Production settings ----------------------------------------------------------------------

_VARS_SET_BY_TESTS = {
    "DEBUG",
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "ALLOWED_HOSTS",
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "STATIC_MANIFEST",
    "SECURE_HSTS_SECONDS",
    "DJANGO_SETTINGS_MODULE",
}


def manage(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    # A clean production-like environment: none of the test run's settings (nor e.g.
    # DJANGO_ALLOW_ASYNC_UNSAFE, which the browser tests set) leak into the check.
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in _VARS_SET_BY_TESTS and not k.startswith("DJANGO_")
    }
    base.update(DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deployment_checks(tmp_path):
    alphabet = string.ascii_letters + string.digits + "!@#%^&*(-_=+)"
    done = manage(
        tmp_path,
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY="".join(secrets.choice(alphabet) for _ in range(60)),
        ALLOWED_HOSTS="example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "System check identified no issues" in output, output
    assert "WARNINGS" not in output, output


def test_production_without_a_secret_key_refuses_to_start(tmp_path):
    done = manage(
        tmp_path,
        "check",
        DEBUG="0",
        ALLOWED_HOSTS="example.com",
        DATABASE_URL=f"sqlite:///{tmp_path / 'prod.sqlite3'}",
    )
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "SECRET_KEY is not set" in done.stderr


def test_a_project_name_with_markup_is_stored_verbatim(evil):
    project, _, _ = evil
    assert Project.objects.get(pk=project.pk).name == f"Team {SCRIPT}"


def test_the_review_pages_show_items_answers_flags_and_comments_as_text(client, evil):
    project, user, first = evil
    flagged = review_flag(item=first, user=user, note=f"look {SCRIPT}")
    client.force_login(user)
    html = client.get(reverse("review", args=[project.pk])).content.decode()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; body 0" in html  # the item
    assert "look &lt;script&gt;" in html  # the flag note
    assert_shown_as_text(html, "review page")
    client.post(
        reverse("review_decide", args=[project.pk, flagged.pk]),
        {"labels": [IMG], "comment": f"why {IMG}", "client_uuid": str(uuid.uuid4())},
    )
    detail = client.get(reverse("review_detail", args=[project.pk, flagged.pk])).content.decode()
    assert "why &lt;img src=x onerror=alert(1)&gt;" in detail
    assert_shown_as_text(detail, "review detail page")
