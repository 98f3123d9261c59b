"""The token endpoint: POST username and password, get an expiring API token.

It authenticates through `django.contrib.auth.authenticate(request=...)` like the login pages, so
Axes' lockout applies to it too, and a scoped throttle bounds how often anyone can ask.
"""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox.models import AuthToken
from knox.settings import knox_settings
from rest_framework.authtoken.serializers import AuthTokenSerializer
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from annotations.api.schema import VALIDATION_ERROR, LockedOutSerializer
from annotations.api.shapes import TokenRequestSerializer, TokenSerializer


class ObtainToken(APIView):
    """POST username and password, get `{"token", "expiry"}`; the token expires after the TTL."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenSerializer,
            400: OpenApiResponse(VALIDATION_ERROR, description="Wrong username or password."),
            429: OpenApiResponse(LockedOutSerializer, description="Locked out, or throttled."),
        },
    )
    def post(self, request: Request) -> Response:
        # The plain HttpRequest: Axes marks it when the login is locked out, and its middleware
        # then answers with the lockout response instead of this view's 400.
        serializer = AuthTokenSerializer(data=request.data, context={"request": request._request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        instance, token = AuthToken.objects.create(user=user, expiry=knox_settings.TOKEN_TTL)
        user_logged_in.send(sender=type(user), request=request._request, user=user)
        return Response({"token": token, "expiry": instance.expiry})
