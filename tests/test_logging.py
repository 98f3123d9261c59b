"""The log the console shows: each line once, a refused request (403/404) as one line without a
traceback, a server error with its traceback, and LOG_LEVEL read from the environment. The
settings' LOGGING is applied fresh in a subprocess, as `manage.py demo` applies it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_settings import ROOT, clean_env

# Requests go through Django's real handler (the test client) to a URLconf with a refusing and
# a failing view; other loggers write one line each, as the dev server and the app do.
PROBE = """
import logging, sys, types
import django
django.setup()
from django.core.exceptions import PermissionDenied
from django.test import Client, override_settings
from django.urls import path

def denied(request):
    raise PermissionDenied("Your role in this project does not allow this.")

def broken(request):
    raise ValueError("a real bug")

urls = types.ModuleType("probe_urls")
urls.urlpatterns = [path("denied/", denied), path("broken/", broken)]
sys.modules["probe_urls"] = urls
with override_settings(ROOT_URLCONF="probe_urls"):
    client = Client(raise_request_exception=False)
    assert client.get("/denied/").status_code == 403
    assert client.get("/missing/").status_code == 404
    assert client.get("/broken/").status_code == 500
logging.getLogger("django.channels.server").warning("HTTP GET /denied/ 403")
logging.getLogger("annotations.probe").info("an app line at INFO")
logging.getLogger("django.probe").info("a django line at INFO")
logging.getLogger("axes.handlers.database").info("AXES: Successful login by probe.")
logging.getLogger("axes.handlers.database").warning("AXES: Locking out probe after failures.")
"""


def run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        env=clean_env(tmp_path, ALLOWED_HOSTS="testserver", SECURE_SSL_REDIRECT="0", **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_in_debug_every_line_is_logged_once_and_refusals_without_a_traceback(tmp_path):
    done = run_probe(tmp_path, DEBUG="1")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for line in [
        "Forbidden (Permission denied): /denied/",
        "Not Found: /missing/",
        "Internal Server Error: /broken/",
        "HTTP GET /denied/ 403",
        "an app line at INFO",
        "a django line at INFO",
    ]:
        assert lines.count(line) == 1, (line, done.stderr)
    # Only the server error carries a traceback; the 403 and the 404 are one line each.
    assert done.stderr.count("Traceback (most recent call last)") == 1, done.stderr
    assert "ValueError: a real bug" in done.stderr
    assert "PermissionDenied" not in done.stderr
    # The lockout's bookkeeping (four lines per login) stays out; a lockout is logged.
    assert "AXES: Successful login by probe." not in lines
    assert lines.count("AXES: Locking out probe after failures.") == 1


def test_in_production_the_log_level_comes_from_log_level(tmp_path):
    done = run_probe(tmp_path, DEBUG="0", SECRET_KEY="k" * 60, LOG_LEVEL="warning")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines.count("Forbidden (Permission denied): /denied/") == 1
    assert lines.count("Internal Server Error: /broken/") == 1
    assert "an app line at INFO" not in lines and "a django line at INFO" not in lines


def test_an_unknown_log_level_stops_the_settings_with_a_clear_message(tmp_path):
    done = run_probe(tmp_path, DEBUG="1", LOG_LEVEL="loud")
    assert done.returncode != 0
    assert "LOG_LEVEL='LOUD'" in done.stderr
