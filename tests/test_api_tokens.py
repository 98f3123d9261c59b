"""API tokens expire: stored hashed (django-rest-knox), refused with a clear 401 once past their
lifetime (API_TOKEN_TTL_HOURS), and replaced by asking the token endpoint again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.conftest import PASSWORD

pytestmark = pytest.mark.usefixtures("fast_passwords")


def obtain(client: APIClient) -> dict:
    response = client.post(
        reverse("api-token"), {"username": "annie", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def with_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_a_token_expires_after_the_configured_lifetime(annotator, project):
    before = timezone.now()
    body = obtain(APIClient())
    expiry = parse_datetime(body["expiry"])
    assert before + settings.API_TOKEN_TTL <= expiry <= timezone.now() + settings.API_TOKEN_TTL
    assert settings.API_TOKEN_TTL.days == 7  # the documented default


def test_an_expired_token_gets_401_saying_so_and_a_fresh_one_works(annotator, project):
    old = obtain(APIClient())["token"]
    assert with_token(old).get(reverse("api-project-list")).status_code == 200
    AuthToken.objects.update(expiry=timezone.now() - timedelta(seconds=1))

    response = with_token(old).get(reverse("api-project-list"))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert response.json()["detail"].startswith("Token expired. Ask /api/auth/token/ for a new one")
    assert not AuthToken.objects.exists(), "the expired token is deleted"

    new = obtain(APIClient())["token"]
    assert new != old
    listed = with_token(new).get(reverse("api-project-list"))
    assert listed.status_code == 200
    assert [p["name"] for p in listed.json()["results"]] == ["Sentiment"]


def test_tokens_are_stored_hashed(annotator):
    token = obtain(APIClient())["token"]
    stored = AuthToken.objects.get(user=annotator)
    assert token not in (stored.digest, stored.token_key)
    assert len(token) == 64 and token.startswith(stored.token_key)


@pytest.mark.parametrize("header", [b"Token \xff\xfe", b"Token a b", b"Token"])
def test_a_malformed_token_header_is_refused_not_a_500(project, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header.decode("latin-1"))
    response = client.get(reverse("api-project-list"))
    assert response.status_code in (401, 403)
    assert "token" in response.json()["detail"].lower()
