"""Login lockout (django-axes) on the login page, the admin login and the API token endpoint,
and the API's throttles: guessing passwords is cut off after a few tries, before any password is
hashed, for one username from one address only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.hashers import MD5PasswordHasher
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle, UserRateThrottle

from annotations.security import LoginRateThrottle
from tests.conftest import PASSWORD

pytestmark = pytest.mark.usefixtures("fast_passwords")
LIMIT = settings.AXES_FAILURE_LIMIT


class CountingHasher(MD5PasswordHasher):
    """MD5, counting every hashing of a password (a check, or the dummy hash Django computes
    for an unknown username): the expensive step a lockout must not reach."""

    algorithm = "md5"  # verifies the fixtures' MD5 hashes
    hashed = 0

    def encode(self, password, salt):  # MD5's verify() calls encode() too
        CountingHasher.hashed += 1
        return super().encode(password, salt)


@pytest.fixture
def counting_hasher(settings):
    settings.PASSWORD_HASHERS = ["tests.test_lockout.CountingHasher"]
    CountingHasher.hashed = 0
    return CountingHasher


def login(client, username, password, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def fail_until_locked(client, username="annie", **extra):
    for _ in range(LIMIT):
        response = login(client, username, "wrong", **extra)
    return response


def test_the_right_password_is_refused_after_too_many_wrong_ones(client, annotator):
    for _ in range(LIMIT - 1):
        response = login(client, "annie", "wrong")
        assert response.status_code == 200  # the form again, with its error
    locked = login(client, "annie", "wrong")
    assert locked.status_code == 429
    response = login(client, "annie", PASSWORD)
    assert response.status_code == 429
    html = response.content.decode()
    assert "Too many failed logins" in html and "Try again in 15 minutes" in html
    assert response["Retry-After"] == str(15 * 60)
    assert "_auth_user_id" not in client.session
    assert client.get(reverse("project_list")).status_code == 302  # still logged out


def test_a_locked_account_is_refused_before_its_password_is_hashed(
    client, annotator, counting_hasher
):
    before = counting_hasher.hashed
    fail_until_locked(client)
    checked = counting_hasher.hashed
    assert checked - before == LIMIT
    for password in ("wrong", PASSWORD, "wrong again"):
        assert login(client, "annie", password).status_code == 429
    assert counting_hasher.hashed == checked, "a locked-out login still ran the hasher"


def test_a_lockout_affects_only_that_username_from_that_address(client, annotator, reviewer):
    fail_until_locked(client)
    assert login(client, "annie", PASSWORD).status_code == 429
    # Another user at the same address logs in.
    assert login(client, "rev", PASSWORD).status_code == 302
    client.logout()
    # The same user from their own desk logs in: an attacker cannot lock them out everywhere.
    response = login(client, "annie", PASSWORD, REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 302
    assert client.get(reverse("project_list")).status_code == 200


def test_the_lockout_ends_after_the_cool_off(client, annotator):
    fail_until_locked(client)
    assert login(client, "annie", PASSWORD).status_code == 429
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    assert login(client, "annie", PASSWORD).status_code == 302
    client.logout()
    # A success resets the count: one more wrong password does not lock again.
    assert login(client, "annie", "wrong").status_code == 200
    assert login(client, "annie", PASSWORD).status_code == 302


def test_the_admin_login_locks_out_too(client, superuser):
    url = reverse("admin:login")
    for _ in range(LIMIT):
        client.post(url, {"username": "root", "password": "wrong", "next": "/admin/"})
    response = client.post(url, {"username": "root", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()


def test_one_address_trying_many_usernames_is_slowed_down(
    client, annotator, counting_hasher, monkeypatch
):
    monkeypatch.setitem(LoginRateThrottle.THROTTLE_RATES, "login", "5/min")
    before = counting_hasher.hashed
    for i in range(5):
        assert login(client, f"guess{i}", "wrong").status_code == 200
    assert counting_hasher.hashed - before == 5
    for headers in ({}, {"HTTP_X_FORWARDED_FOR": "203.0.113.7"}):  # a made-up header is no escape
        response = login(client, "annie", PASSWORD, **headers)
        assert response.status_code == 429
        assert "Too many login attempts from your address" in response.content.decode()
        assert int(response["Retry-After"]) > 0
    assert counting_hasher.hashed - before == 5, "a throttled login still hashed a password"
    response = client.post(reverse("admin:login"), {"username": "root", "password": "x"})
    assert response.status_code == 429
    # Another address logs in.
    assert login(client, "annie", PASSWORD, REMOTE_ADDR="10.1.2.3").status_code == 302


# --- The API token endpoint -----------------------------------------------------------------


def ask_token(client, password, **extra):
    body = {"username": "annie", "password": password}
    return client.post(reverse("api-token"), body, format="json", **extra)


def test_the_token_endpoint_locks_out_with_a_json_429(annotator, counting_hasher):
    client = APIClient()
    for _ in range(LIMIT - 1):
        assert ask_token(client, "wrong").status_code == 400
    assert ask_token(client, "wrong").status_code == 429  # the failure that reaches the limit
    checked = counting_hasher.hashed
    response = ask_token(client, PASSWORD)
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert "Too many failed logins" in response.json()["detail"]
    assert "token" not in response.json()
    assert counting_hasher.hashed == checked
    # Failures on the login page and the API count together: it is one password to guess.
    assert login(APIClient(), "annie", PASSWORD).status_code == 429


def test_the_token_endpoint_is_throttled_per_client(annotator, monkeypatch):
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "token", "3/min")
    client = APIClient()
    for _ in range(3):
        assert client.post(reverse("api-token"), {}, format="json").status_code == 400
    response = ask_token(client, PASSWORD)
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    # Another address still gets its token.
    assert ask_token(client, PASSWORD, REMOTE_ADDR="10.9.9.9").status_code == 200


def test_api_users_are_throttled_only_far_above_an_annotators_pace(annotator, project):
    rate, period = UserRateThrottle().parse_rate(
        settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"]
    )
    # Three requests a label at one label a second, sustained, stays within the rate.
    assert rate / period >= 3 * 1.0


def test_a_user_over_the_api_rate_gets_429_and_others_do_not(annotator, reviewer, monkeypatch):
    monkeypatch.setitem(UserRateThrottle.THROTTLE_RATES, "user", "5/min")
    annie, rev = APIClient(), APIClient()
    annie.force_authenticate(annotator)
    rev.force_authenticate(reviewer)
    for _ in range(5):
        assert annie.get(reverse("api-project-list")).status_code == 200
    response = annie.get(reverse("api-project-list"))
    assert response.status_code == 429
    assert "throttled" in response.json()["detail"].lower()
    assert rev.get(reverse("api-project-list")).status_code == 200
