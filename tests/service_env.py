"""Chooses the services the test suite runs against, before Django reads its settings.

Loaded as a pytest plugin (`-p tests.service_env` in pyproject), so it runs before
pytest-django imports the settings. PostgreSQL: DATABASE_URL if set, else TEST_DATABASE_URL
(default: the local server) when it answers, else SQLite with the PostgreSQL-only tests skipped.
Redis likewise with TEST_REDIS_URL. With CI=true a service that does not answer is an error.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
DEFAULT_PG = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-not-for-production-use-0123456789")
os.environ["SECURE_SSL_REDIRECT"] = "0"
os.environ["SECURE_COOKIES"] = "0"
os.environ["STATIC_MANIFEST"] = "0"
# Tests run the training worker themselves when they need one (tests/test_worker.py), so that no
# training thread outlives the test that caused it.
os.environ.setdefault("TRAINING_WORKER", "external")
os.environ.setdefault("DATA_DIR", os.path.join(os.path.dirname(__file__), "..", "data", "test"))


def _answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), 1):
            return True
    except OSError:
        return False


def _postgres_ok(url: str) -> str | None:
    """None if a PostgreSQL server at `url` accepts a login, else the reason."""
    if not _answers(url):
        return f"no PostgreSQL server answers at {urlparse(url).netloc}"
    try:
        import psycopg

        parsed = urlparse(url)
        psycopg.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username,
            password=parsed.password,
            # The maintenance database: Django creates test_<name> from there, so <name> itself
            # need not exist.
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"
        return f"PostgreSQL at {urlparse(url).netloc} refused the connection: {exc}"
    return None


SKIP_REASONS: dict[str, str] = {}

if not os.environ.get("DATABASE_URL"):
    _pg = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)
    _why = _postgres_ok(_pg)
    if _why is None:
        os.environ["DATABASE_URL"] = _pg
    else:
        SKIP_REASONS["postgres"] = _why
elif not os.environ["DATABASE_URL"].startswith(("postgres://", "postgresql://")):
    SKIP_REASONS["postgres"] = "DATABASE_URL is not a PostgreSQL database"

REDIS_URL = os.environ.get("TEST_REDIS_URL", os.environ.get("REDIS_URL") or DEFAULT_REDIS)
if not _answers(REDIS_URL):
    SKIP_REASONS["redis"] = f"no Redis server answers at {urlparse(REDIS_URL).netloc}"

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
if not os.path.exists(CHROMIUM):
    SKIP_REASONS["browser"] = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
else:
    try:
        import playwright  # noqa: F401
    except ImportError:
        SKIP_REASONS["browser"] = "Playwright for Python is not installed"


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI and SKIP_REASONS:
        problems = "; ".join(f"{k}: {v}" for k, v in SKIP_REASONS.items())
        raise pytest.UsageError(f"CI=true but a service the tests need is missing: {problems}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker, reason in SKIP_REASONS.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_report_header(config: pytest.Config) -> list[str]:
    db = os.environ.get("DATABASE_URL", "sqlite (default)")
    lines = [f"database: {urlparse(db).scheme or db}", f"redis for tests: {REDIS_URL}"]
    lines += [f"SKIPPING {k} tests: {v}" for k, v in SKIP_REASONS.items()]
    return lines
