"""Configuration from the environment: typed readers that fail loudly, and the settings module
turning DATABASE_URL / REDIS_URL into the right database and channel layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dj_database_url
import pytest
from django.core.exceptions import ImproperlyConfigured

from dataprep_site.env import channel_layers_for, env_bool, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parent.parent


# --- env helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["1", "true", "True", "YES", "on", " on "])
def test_env_bool_reads_true(monkeypatch, raw):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_env_bool_reads_false(monkeypatch, raw):
    monkeypatch.setenv("FLAG", raw)
    assert env_bool("FLAG", True) is False


def test_env_bool_uses_the_default_when_unset(monkeypatch):
    monkeypatch.delenv("FLAG", raising=False)
    assert env_bool("FLAG", True) is True
    assert env_bool("FLAG", False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "tru"])
def test_env_bool_refuses_anything_else_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("FLAG", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"FLAG='{raw}' is not a boolean"):
        env_bool("FLAG")


def test_env_int_reads_integers_and_defaults(monkeypatch):
    monkeypatch.setenv("N", "42")
    assert env_int("N", 1) == 42
    monkeypatch.setenv("N", "-3")
    assert env_int("N", 1) == -3
    monkeypatch.setenv("N", "")
    assert env_int("N", 7) == 7
    monkeypatch.delenv("N")
    assert env_int("N", 7) == 7


@pytest.mark.parametrize("raw", ["4x", "1.5", "ten"])
def test_env_int_refuses_non_integers_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv("N", raw)
    with pytest.raises(ImproperlyConfigured, match=rf"N='{raw}' is not an integer"):
        env_int("N", 0)


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv("HOSTS", " a.example, b.example,, c ")
    assert env_list("HOSTS", ["x"]) == ["a.example", "b.example", "c"]
    monkeypatch.setenv("HOSTS", "")
    assert env_list("HOSTS", ["x"]) == []
    monkeypatch.delenv("HOSTS")
    assert env_list("HOSTS", ["x"]) == ["x"]


def test_env_str_treats_empty_as_unset(monkeypatch):
    monkeypatch.setenv("S", "")
    assert env_str("S", "d") == "d"
    monkeypatch.setenv("S", "value")
    assert env_str("S", "d") == "value"


def test_without_redis_the_channel_layer_is_in_memory():
    assert channel_layers_for(None) == {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
    assert channel_layers_for("")["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"


def test_with_redis_the_channel_layer_is_channels_redis():
    layer = channel_layers_for("redis://cache.internal:6380/2")["default"]
    assert layer["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    (host,) = layer["CONFIG"]["hosts"]
    assert host["address"] == "redis://cache.internal:6380/2"
    assert host["socket_timeout"] > 5  # longer than the layer's 5 s blocking receive


# --- DATABASE_URL parsing --------------------------------------------------------------------


def test_a_sqlite_url_names_a_file():
    config = dj_database_url.parse("sqlite:////var/lib/dataprep/db.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == "/var/lib/dataprep/db.sqlite3"


def test_a_postgres_url_gives_every_connection_field():
    config = dj_database_url.parse("postgres://labeler:s%40cret@db.internal:5433/labels")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["USER"], config["PASSWORD"], config["HOST"], config["PORT"], config["NAME"]) == (
        "labeler",
        "s@cret",
        "db.internal",
        5433,
        "labels",
    )


# --- The settings module, loaded fresh in a subprocess -----------------------------------------

PROBE = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST"),
    "options": {k: v for k, v in db.get("OPTIONS", {}).items() if k != "pool"},
    "pool": "pool" in db.get("OPTIONS", {}),
    "health_checks": db["CONN_HEALTH_CHECKS"],
    "layer": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "layer_hosts": settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts"),
    "debug": settings.DEBUG, "secret": settings.SECRET_KEY,
    "hosts": settings.ALLOWED_HOSTS, "lease": settings.LEASE_SECONDS,
    "media": str(settings.MEDIA_ROOT), "ssl_redirect": settings.SECURE_SSL_REDIRECT,
}))
"""


_TEST_RUN_VARS = {
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "MEDIA_ROOT",
    "SECURE_SSL_REDIRECT",
    "SECURE_COOKIES",
    "STATIC_MANIFEST",
    "LEASE_SECONDS",
    "DB_POOL",
}


def clean_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """This process's environment without the test run's settings, plus `overrides`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _TEST_RUN_VARS and not k.startswith("DJANGO_")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="dataprep_site.settings",
        DATA_DIR=str(tmp_path / "data"),
        PYTHONPATH=str(ROOT),
    )
    env.update(overrides)
    return env


def load_settings(tmp_path: Path, *, probe: str = PROBE, **env: str) -> dict:
    """The JSON that `probe` prints last, run after django.setup() in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + probe],
        env=clean_env(tmp_path, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_sweep_interval_below_one_second_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=clean_env(tmp_path, DEBUG="1", TRAINING_SWEEP_SECONDS="0"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "TRAINING_SWEEP_SECONDS=0" in done.stderr


def test_pooled_connections_are_health_checked_before_use(tmp_path):
    """Django hands psycopg_pool its `check_connection` when CONN_HEALTH_CHECKS is on: a pool
    that served connections the server had dropped gave a burst of HTTP 500s."""
    s = load_settings(
        tmp_path,
        SECRET_KEY="x" * 50,
        DATABASE_URL="postgres://app:pw@db.internal:5432/labels",
        DB_POOL="1",
    )
    assert s["pool"] is True and s["health_checks"] is True


def test_without_database_url_the_settings_use_sqlite_in_the_data_directory(tmp_path):
    s = load_settings(tmp_path, DEBUG="1")
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "data" / "dataprep.sqlite3")
    assert (tmp_path / "data").is_dir(), "the data directory is created"
    assert s["options"]["transaction_mode"] == "IMMEDIATE"
    assert s["layer"] == "channels.layers.InMemoryChannelLayer"
    assert s["media"] == str(tmp_path / "data" / "media")


def test_debug_without_secret_key_uses_the_development_key(tmp_path):
    s = load_settings(tmp_path, DEBUG="1")
    assert s["debug"] is True
    assert s["secret"].startswith("dev-only-insecure")
    assert s["ssl_redirect"] is False
    assert "localhost" in s["hosts"]


def test_production_settings_come_from_the_environment(tmp_path):
    s = load_settings(
        tmp_path,
        DEBUG="0",
        SECRET_KEY="k" * 60,
        DATABASE_URL="postgres://app:pw@db.internal:5432/labels",
        REDIS_URL="redis://cache.internal:6379/1",
        ALLOWED_HOSTS="labels.example.com, www.labels.example.com",
        MEDIA_ROOT=str(tmp_path / "media"),
        LEASE_SECONDS="45",
    )
    assert (s["engine"], s["name"], s["host"]) == (
        "django.db.backends.postgresql",
        "labels",
        "db.internal",
    )
    assert s["pool"] is False
    assert s["health_checks"] is True  # a dropped connection is replaced before it is used
    assert s["layer"] == "channels_redis.core.RedisChannelLayer"
    assert [h["address"] for h in s["layer_hosts"]] == ["redis://cache.internal:6379/1"]
    assert s["hosts"] == ["labels.example.com", "www.labels.example.com"]
    assert s["media"] == str(tmp_path / "media")
    assert s["lease"] == 45
    assert s["debug"] is False
    assert s["ssl_redirect"] is True


def test_production_without_allowed_hosts_allows_none(tmp_path):
    assert load_settings(tmp_path, DEBUG="0", SECRET_KEY="k" * 60)["hosts"] == []


def test_a_bad_value_stops_the_settings_with_a_clear_message(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=clean_env(tmp_path, DEBUG="1", LEASE_SECONDS="two minutes"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "LEASE_SECONDS='two minutes' is not an integer" in done.stderr
