"""Expiring, hashed API tokens (django-rest-knox) with a clear answer when one has expired.

A token lives `API_TOKEN_TTL_HOURS`; after that the client gets 401 with a message saying so and
asks the token endpoint (annotations/api/tokens.py) for a fresh one. No view imports here: DRF
imports this module while it loads its settings.
"""

from __future__ import annotations

from hmac import compare_digest

from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.models import AuthToken
from knox.settings import CONSTANTS
from rest_framework import exceptions, status

TOKEN_URL = "/api/auth/token/"


class TokenRefused(exceptions.APIException):
    """401 with `WWW-Authenticate: Token`: the client sent a token and must get a new one.

    (DRF would answer 403 because session authentication comes first; a refused token is a
    request to authenticate again, which is what 401 means.)"""

    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "authentication_failed"
    auth_header = "Token"


class ExpiringTokenAuthentication(TokenAuthentication):
    """Knox's token authentication with a clear answer for an expired token."""

    def authenticate_credentials(self, token: bytes) -> tuple:
        try:
            raw = token.decode("utf-8")
        except UnicodeDecodeError:
            raise TokenRefused("Invalid token.") from None
        digest = hash_token(raw)
        expired = AuthToken.objects.filter(
            token_key=raw[: CONSTANTS.TOKEN_KEY_LENGTH], expiry__lte=timezone.now()
        ).values_list("digest", flat=True)
        if any(compare_digest(digest, other) for other in expired):
            AuthToken.objects.filter(digest=digest).delete()
            raise TokenRefused(
                f"Token expired. Ask {TOKEN_URL} for a new one with your username and password."
            )
        try:
            return super().authenticate_credentials(token)
        except exceptions.AuthenticationFailed as exc:
            raise TokenRefused(exc.detail) from None
