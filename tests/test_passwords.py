"""Password change (logged-in users, linked from the header) and password reset by email
(Django's views, our templates): the mailed link really sets a new password, and the reset page
answers an unknown address exactly as a known one, so it tells nobody who has an account."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from tests.conftest import PASSWORD, make_user
from tests.test_settings import load_settings

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

NEW_PASSWORD = "a-new-and-longer-passphrase-42"


def can_log_in(client, username: str, password: str) -> bool:
    client.logout()
    return client.login(username=username, password=password)


def test_the_header_links_to_the_password_change_page(client, annotator):
    client.force_login(annotator)
    page = client.get("/projects/").content.decode()
    assert 'href="/accounts/password_change/"' in page


def test_password_change_needs_a_login(client):
    response = client.get("/accounts/password_change/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/accounts/password_change/")
    response = client.post(
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": "x" * 20, "new_password2": "x" * 20},
    )
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_user_changes_their_password_and_stays_logged_in(client, annotator):
    client.force_login(annotator)
    page = client.get("/accounts/password_change/")
    assert page.status_code == 200 and b"Change password" in page.content

    response = client.post(
        "/accounts/password_change/",
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )

    assert response.status_code == 302 and response["Location"] == "/accounts/password_change/done/"
    assert client.get("/projects/").status_code == 200  # this session survives the change
    annotator.refresh_from_db()
    assert annotator.check_password(NEW_PASSWORD) and not annotator.check_password(PASSWORD)
    assert can_log_in(client, "annie", NEW_PASSWORD)
    assert not can_log_in(client, "annie", PASSWORD)


def test_a_wrong_current_password_changes_nothing_and_says_so(client, annotator):
    client.force_login(annotator)
    response = client.post(
        "/accounts/password_change/",
        {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert "Your old password was entered incorrectly" in response.content.decode()
    annotator.refresh_from_db()
    assert annotator.check_password(PASSWORD)


def without_csrf_token(page: bytes) -> str:
    """A page's text without its per-response CSRF token (masked anew for every response)."""
    return re.sub(r'"x-csrftoken": "[^"]+"', "", page.decode())


def test_the_login_page_links_to_the_password_reset(client):
    assert 'href="/accounts/password_reset/"' in client.get("/accounts/login/").content.decode()


def test_the_reset_email_link_sets_a_new_password_once(client):
    user = make_user("ada", email="ada@example.test")
    page = client.get("/accounts/password_reset/")
    assert page.status_code == 200 and b"Reset password" in page.content

    response = client.post("/accounts/password_reset/", {"email": "ada@example.test"})

    assert response.status_code == 302 and response["Location"] == "/accounts/password_reset/done/"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@example.test"] and "password" in message.subject.lower()
    link = re.search(r"http://testserver(/accounts/reset/\S+/\S+/)", message.body).group(1)
    # The link redirects to a page without the token in its URL (Django keeps it in the session).
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and b"Choose a new password" in form_page.content
    set_url = form_page.redirect_chain[-1][0]
    done = client.post(set_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert done.status_code == 302 and done["Location"] == "/accounts/reset/done/"
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert can_log_in(client, "ada", NEW_PASSWORD)

    client.logout()
    again = client.get(link, follow=True)
    assert b"Link no longer valid" in again.content  # a used link does not work twice


def test_the_reset_page_says_the_same_for_an_unknown_address(client):
    make_user("ada", email="ada@example.test")
    known = client.post("/accounts/password_reset/", {"email": "ada@example.test"}, follow=True)
    unknown = client.post(
        "/accounts/password_reset/", {"email": "nobody@example.test"}, follow=True
    )
    assert (
        known.redirect_chain == unknown.redirect_chain == [("/accounts/password_reset/done/", 302)]
    )
    assert without_csrf_token(known.content) == without_csrf_token(unknown.content)
    assert [m.to for m in mail.outbox] == [["ada@example.test"]]  # only the real account's


def test_a_forged_reset_link_changes_nothing(client):
    user = make_user("ada", email="ada@example.test")
    response = client.get("/accounts/reset/MQ/forged-token/", follow=True)
    assert response.status_code == 200 and b"Link no longer valid" in response.content
    user.refresh_from_db()
    assert user.check_password(PASSWORD)
    assert get_user_model().objects.count() == 1


# --- the email backend comes from the environment ----------------------------------------------

EMAIL_PROBE = """
import json
from django.conf import settings
print(json.dumps({k: getattr(settings, k) for k in (
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_USE_TLS", "EMAIL_HOST_USER",
    "DEFAULT_FROM_EMAIL")}))
"""


def email_settings(tmp_path, **env: str) -> dict:
    return load_settings(tmp_path, probe=EMAIL_PROBE, **env)


def test_the_demo_prints_reset_mails_to_the_console(tmp_path):
    assert email_settings(tmp_path, DEBUG="1")["EMAIL_BACKEND"].endswith("console.EmailBackend")


def test_an_smtp_server_is_configured_from_the_environment(tmp_path):
    s = email_settings(
        tmp_path,
        DEBUG="0",
        SECRET_KEY="k" * 60,
        EMAIL_HOST="smtp.example.test",
        EMAIL_HOST_USER="labels",
        DEFAULT_FROM_EMAIL="labels@example.test",
    )
    assert s == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "smtp.example.test",
        "EMAIL_PORT": 587,
        "EMAIL_USE_TLS": True,
        "EMAIL_HOST_USER": "labels",
        "DEFAULT_FROM_EMAIL": "labels@example.test",
    }
