"""The abuse-resistance settings come from the environment and fail loudly on bad values."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.test_settings import ROOT, clean_env

PROBE = """
import json
from django.conf import settings
print(json.dumps({
    "limit": settings.AXES_FAILURE_LIMIT,
    "cooloff_s": settings.AXES_COOLOFF_TIME.total_seconds(),
    "params": settings.AXES_LOCKOUT_PARAMETERS,
    "ttl_s": settings.API_TOKEN_TTL.total_seconds(),
    "rates": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "cache": settings.CACHES["default"]["BACKEND"],
    "backends": settings.AUTHENTICATION_BACKENDS,
}))
"""


def run(tmp_path, code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        env=clean_env(tmp_path, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lockout_throttles_and_token_lifetime_come_from_the_environment(tmp_path):
    done = run(
        tmp_path,
        PROBE,
        DEBUG="1",
        LOGIN_FAILURE_LIMIT="8",
        LOGIN_COOLOFF_MINUTES="30",
        API_TOKEN_TTL_HOURS="12",
        API_USER_RATE="100/min",
        API_TOKEN_RATE="5/hour",
        REDIS_URL="redis://cache.internal:6379/1",
    )
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout.strip().splitlines()[-1])
    assert (s["limit"], s["cooloff_s"], s["ttl_s"]) == (8, 1800, 12 * 3600)
    assert s["params"] == [["username", "ip_address"]]
    assert s["rates"]["user"] == "100/min" and s["rates"]["token"] == "5/hour"
    # Throttle counters are shared by every server process through Redis.
    assert s["cache"] == "django.core.cache.backends.redis.RedisCache"
    # The lockout check comes before the backend that hashes the password.
    assert s["backends"] == [
        "annotations.security.LockoutBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]


def test_defaults_without_redis(tmp_path):
    done = run(tmp_path, PROBE, DEBUG="1")
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout.strip().splitlines()[-1])
    assert (s["limit"], s["cooloff_s"], s["ttl_s"]) == (5, 900, 7 * 24 * 3600)
    assert s["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert s["rates"]["login"] == "20/min"


def test_a_token_lifetime_that_is_not_positive_stops_the_settings(tmp_path):
    done = run(tmp_path, "", DEBUG="1", API_TOKEN_TTL_HOURS="0")
    assert done.returncode != 0
    assert "API_TOKEN_TTL_HOURS=0 must be positive" in done.stderr
