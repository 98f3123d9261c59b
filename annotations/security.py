"""Site-wide protections that are not about one project: the login lockout (django-axes), a
per-address rate of login attempts, and `Cache-Control: no-store` on everything a logged-in user
sees."""

from __future__ import annotations

from collections.abc import Callable

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off, get_failure_limit
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from rest_framework.throttling import SimpleRateThrottle


class LockoutBackend(AxesStandaloneBackend):
    """Axes' check, refusing a locked-out username+address before any password is hashed
    (standalone: ModelBackend, next in the list, authenticates and answers permissions).

    Every login over HTTP (the login page, the admin's, the API token endpoint) passes its
    request. Only code without a client (the shell, the test client's `login()`) authenticates
    without one: there is nobody to lock out there, so the check is skipped instead of raising.
    """

    def authenticate(self, request: HttpRequest | None, *args, **kwargs) -> None:
        if request is None:
            return None
        return super().authenticate(request, *args, **kwargs)


def _minutes(request: HttpRequest) -> int:
    cool_off = get_cool_off(request)
    return max(1, round(cool_off.total_seconds() / 60)) if cool_off else 0


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None, credentials: dict | None
) -> HttpResponse:
    """What a locked-out login gets: JSON for the API, a page for people. Status 429."""
    minutes = _minutes(request)
    message = (
        f"Too many failed logins for this account from your address. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    status = settings.AXES_HTTP_RESPONSE_CODE
    if request.path.startswith("/api/"):
        response = JsonResponse({"detail": message, "retry_after_minutes": minutes}, status=status)
    else:
        context = {
            "message": message,
            "minutes": minutes,
            "failure_limit": get_failure_limit(request, credentials),
        }
        response = render(request, "registration/locked_out.html", context, status=status)
    if minutes:
        response["Retry-After"] = str(minutes * 60)
    return response


class NoStoreMiddleware:
    """`Cache-Control: no-store` on every response to a logged-in user (pages, API, item images):
    nothing a project shows may stay in a shared or browser cache after logout. Static files
    (public, hashed) keep their own caching. Token clients count too: DRF sets `request.user`
    on the underlying request when it authenticates one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.static_prefix = "/" + settings.STATIC_URL.lstrip("/")

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith(self.static_prefix):
            return response
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            response["Cache-Control"] = "no-store"
        return response


class LoginRateThrottle(SimpleRateThrottle):
    """Login attempts per client address (rate `LOGIN_RATE`), whatever the username.

    The lockout counts per username and address; this bounds what one address can make the
    server hash by trying many usernames (each check costs ~0.4 s of CPU)."""

    scope = "login"

    def get_cache_key(self, request: HttpRequest, view: object) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginRateMiddleware:
    """Answers 429 to a login POST (site or admin login page) over the address's rate. (The API
    token endpoint has the same limit as a DRF throttle.)"""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path in (reverse("login"), reverse("admin:login")):
            throttle = LoginRateThrottle()
            if not throttle.allow_request(request, None):
                seconds = max(1, round(throttle.wait() or 60))
                minutes = max(1, round(seconds / 60))
                message = (
                    "Too many login attempts from your address. "
                    f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
                )
                context = {"message": message, "minutes": minutes, "failure_limit": None}
                response = render(request, "registration/locked_out.html", context, status=429)
                response["Retry-After"] = str(seconds)
                return response
        return self.get_response(request)
