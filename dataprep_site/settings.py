"""The one settings module. Everything that differs between a laptop demo and production
comes from environment variables; see README "Configuration"."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from dataprep_site.env import channel_layers_for, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data")))

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "dev-only-insecure-key-never-use-in-production-0123456789abcdef"
SECRET_KEY = env_str("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment, "
            "or DEBUG=1 for a local development server."
        )
    SECRET_KEY = _DEV_SECRET_KEY

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by WhiteNoise: no CDN
    "channels",
    "annotations",
    "curation",
]

# WhiteNoise is sync-only and comes last on purpose: under ASGI, Django then runs the whole
# chain above it as plain sync code in the request's thread instead of hopping between the
# event loop and a thread for each middleware: 6 switches a request instead of 16, ~0.6 ms less
# CPU and a shorter tail on a busy machine (benchmarks/README.md). Static files still never
# reach a view.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

ROOT_URLCONF = "dataprep_site.urls"
ASGI_APPLICATION = "dataprep_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite file in DATA_DIR unless DATABASE_URL names another database (PostgreSQL in production).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'dataprep.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 0),
        # A connection the server dropped (restart, failover, pg_terminate_backend) is replaced
        # before a request uses it, not after a 500: Django checks a persistent connection
        # (DB_CONN_MAX_AGE > 0) before reuse, and with DB_POOL=1 has the pool check each
        # connection it hands out (psycopg_pool's check_connection, one round trip).
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # WAL + a busy timeout let the embedded server take concurrent requests without
    # "database is locked"; IMMEDIATE transactions avoid lock upgrades that deadlock.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
elif env_bool("DB_POOL", False):
    # Under ASGI every request runs in a new thread, so CONN_MAX_AGE (per thread) never reuses a
    # connection; a psycopg pool does, and saves the ~4 ms connect on each request.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN_SIZE", 2),
        "max_size": env_int("DB_POOL_MAX_SIZE", 10),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
CHANNEL_LAYERS = channel_layers_for(REDIS_URL)
# Where the model in the loop trains: "embedded" runs the training worker inside the server
# process (the default without Redis: the in-memory channel layer reaches only this process);
# "external" leaves it to `manage.py trainworker` processes (the default with Redis).
TRAINING_WORKER = env_str("TRAINING_WORKER") or ("external" if REDIS_URL else "embedded")
if TRAINING_WORKER not in {"embedded", "external"}:
    raise ImproperlyConfigured(
        f"TRAINING_WORKER={TRAINING_WORKER!r}: use 'embedded' or 'external'."
    )
# How often a training worker looks in the database for projects whose model lags behind their
# labels (lost wake-ups, a Redis outage) and for follow-up jobs that are due.
TRAINING_SWEEP_SECONDS = env_int("TRAINING_SWEEP_SECONDS", 30)
if TRAINING_SWEEP_SECONDS < 1:
    raise ImproperlyConfigured(
        f"TRAINING_SWEEP_SECONDS={TRAINING_SWEEP_SECONDS}: use a number of seconds, at least 1."
    )
# The shortest time between two automatic runs of one data analysis of a project (after the
# last one ended, done or failed): while a team labels, gold labels grow by the due share every
# few minutes, and each run reads every item. A run asked for by a person always goes.
ANALYSIS_INTERVAL_SECONDS = env_int("ANALYSIS_INTERVAL_SECONDS", 600)
# An automatic run starts when the worker has trained nothing for ANALYSIS_QUIET_SECONDS (a
# pause in labelling), or after ANALYSIS_DEFER_SECONDS at the latest; while it runs, it still
# steps aside for each label's training run.
ANALYSIS_QUIET_SECONDS = env_int("ANALYSIS_QUIET_SECONDS", 5)
ANALYSIS_DEFER_SECONDS = env_int("ANALYSIS_DEFER_SECONDS", 600)
# CPU priority (nice) of `manage.py trainworker`: training is background work, so on a machine it
# shares with the web server, the pages and submissions get the cores first (0 = no change).
TRAINING_WORKER_NICE = env_int("TRAINING_WORKER_NICE", 10)
if not 0 <= TRAINING_WORKER_NICE <= 19:
    raise ImproperlyConfigured(
        f"TRAINING_WORKER_NICE={TRAINING_WORKER_NICE}: use 0 (unchanged) to 19 (lowest)."
    )
# `manage.py trainworker` replaces itself with a fresh process once its resident memory has
# grown by this many MB since it settled (`curation.recycling`); 0: never.
TRAINING_WORKER_MAX_GROWTH_MB = env_int("TRAINING_WORKER_MAX_GROWTH_MB", 128)
if TRAINING_WORKER_MAX_GROWTH_MB < 0:
    raise ImproperlyConfigured(
        f"TRAINING_WORKER_MAX_GROWTH_MB={TRAINING_WORKER_MAX_GROWTH_MB}: use 0 (never) or more."
    )
# Seconds a retiring worker lets its follow-up jobs in hand run on; past them each job stops at
# its next step and is left to the fresh process, queued again (`curation.recycling`).
TRAINING_WORKER_JOB_GRACE_SECONDS = env_int("TRAINING_WORKER_JOB_GRACE_SECONDS", 60)
if TRAINING_WORKER_JOB_GRACE_SECONDS < 0:
    raise ImproperlyConfigured(
        f"TRAINING_WORKER_JOB_GRACE_SECONDS={TRAINING_WORKER_JOB_GRACE_SECONDS}: use 0 or more."
    )
# The shortest time between two refreshes of a project's dashboard by the worker (counts and
# plots, `curation.dashboard`); a project whose numbers did not change is not refreshed at all.
DASHBOARD_REFRESH_SECONDS = env_int("DASHBOARD_REFRESH_SECONDS", 60)
if DASHBOARD_REFRESH_SECONDS < 1:
    raise ImproperlyConfigured(
        f"DASHBOARD_REFRESH_SECONDS={DASHBOARD_REFRESH_SECONDS}: use a number of seconds, at "
        "least 1."
    )
# Model versions kept per project besides milestones and the current one (`curation.versions`).
MODEL_VERSIONS_KEPT = env_int("MODEL_VERSIONS_KEPT", 200)

# Webhooks (docs/webhooks.md). Deliveries go only to public addresses unless a site admin allows
# private ones: all of them (WEBHOOKS_ALLOW_PRIVATE=1, e.g. a receiver on this machine), or only
# the networks listed (WEBHOOKS_ALLOWED_NETWORKS=10.1.0.0/16,fd00:1::/64).
WEBHOOKS_ALLOW_PRIVATE = env_bool("WEBHOOKS_ALLOW_PRIVATE", False)
WEBHOOKS_ALLOWED_NETWORKS = env_list("WEBHOOKS_ALLOWED_NETWORKS", [])
for _network in WEBHOOKS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise ImproperlyConfigured(
            f"WEBHOOKS_ALLOWED_NETWORKS: {_network!r} is not a network "
            "(use 10.0.0.0/8 or fd00::/8)."
        ) from None
# Seconds one delivery attempt may take in all (connect, send, answer, redirects followed).
WEBHOOKS_TIMEOUT_SECONDS = env_int("WEBHOOKS_TIMEOUT_SECONDS", 10)
# Attempts per delivery before it is marked failed (backoff between them: 30 s, 1 min, 2 min, …).
WEBHOOKS_MAX_ATTEMPTS = env_int("WEBHOOKS_MAX_ATTEMPTS", 8)
# Failed attempts in a row after which a hook is disabled (a project admin enables it again).
WEBHOOKS_DISABLE_AFTER = env_int("WEBHOOKS_DISABLE_AFTER", 15)
# How often a worker looks for deliveries that are due (retries); new events wake it at once.
WEBHOOKS_POLL_SECONDS = env_int("WEBHOOKS_POLL_SECONDS", 5)
for _name in ("WEBHOOKS_TIMEOUT_SECONDS", "WEBHOOKS_MAX_ATTEMPTS", "WEBHOOKS_POLL_SECONDS"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]}: use a number, at least 1.")

# A project's prediction endpoint (docs/prediction-endpoint.md): called by the training worker
# under the webhooks' SSRF rules above. Items predicted per run at most (the rest in the next
# runs, every TRAINING_SWEEP_SECONDS), the largest answer read, the largest image sent (bigger
# ones are scaled down), and how often the head of the queue is asked again once every item is
# predicted (the answer says whether the endpoint's model version changed).
ENDPOINT_ITEMS_PER_RUN = env_int("ENDPOINT_ITEMS_PER_RUN", 2000)
ENDPOINT_CHECK_SECONDS = env_int("ENDPOINT_CHECK_SECONDS", 600)
ENDPOINT_MAX_RESPONSE_BYTES = env_int("ENDPOINT_MAX_RESPONSE_BYTES", 8 * 1024 * 1024)
ENDPOINT_IMAGE_MAX_BYTES = env_int("ENDPOINT_IMAGE_MAX_BYTES", 512 * 1024)
for _name in (
    "ENDPOINT_ITEMS_PER_RUN",
    "ENDPOINT_CHECK_SECONDS",
    "ENDPOINT_MAX_RESPONSE_BYTES",
    "ENDPOINT_IMAGE_MAX_BYTES",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]}: use a number, at least 1.")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "project_list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# Production serves hashed, compressed files collected by `collectstatic`; development and
# tests serve straight from the source folders.
STATIC_MANIFEST = env_bool("STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not STATIC_MANIFEST
WHITENOISE_AUTOREFRESH = not STATIC_MANIFEST
# Media is never served by URL: item images go through a view that checks membership.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "/media-not-served/"

# Annotation queue.
LEASE_SECONDS = env_int("LEASE_SECONDS", 120)  # an item handed out is reserved this long
PREFETCH_ITEMS = env_int("PREFETCH_ITEMS", 1)  # items fetched ahead of the current one

# Uploads.
IMPORT_MAX_IMAGE_BYTES = env_int("IMPORT_MAX_IMAGE_BYTES", 20 * 1024 * 1024)
IMPORT_MAX_IMAGE_PIXELS = env_int("IMPORT_MAX_IMAGE_PIXELS", 40_000_000)
# Pixels decoded at once in a process (3-4 bytes each), over all uploads and training: a bigger
# image waits for the others (curation/pixel_budget.py). Default: one image at the limit.
IMAGE_DECODE_PIXELS = env_int("IMAGE_DECODE_PIXELS", IMPORT_MAX_IMAGE_PIXELS)
IMPORT_MAX_ARCHIVE_BYTES = env_int("IMPORT_MAX_ARCHIVE_BYTES", 2 * 1024 * 1024 * 1024)
IMPORT_MAX_ARCHIVE_ENTRIES = env_int("IMPORT_MAX_ARCHIVE_ENTRIES", 200_000)
# A file uploaded through the web page may be this big (its whole request, in bytes); a bigger
# one is refused before it is parsed, pointing to `manage.py import_items` (no limit there).
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
FILE_UPLOAD_HANDLERS = [
    "annotations.imports.uploads.SizeLimitUploadHandler",  # first: skips files over the limit
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "django.core.files.uploadhandler.TemporaryFileUploadHandler",
]
# Request bodies and uploads above this are spooled to a temporary file, not held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = min(10 * 1024 * 1024, IMPORT_MAX_UPLOAD_BYTES)
# Everything but files (form fields, API JSON bodies): larger is refused with a 400.
DATA_UPLOAD_MAX_MEMORY_SIZE = min(10 * 1024 * 1024, IMPORT_MAX_UPLOAD_BYTES)

# An open project websocket re-checks its session and membership at most this often (seconds)
# before passing on an event; removal from the project and logout close it at once anyway.
WEBSOCKET_RECHECK_SECONDS = env_int("WEBSOCKET_RECHECK_SECONDS", 5)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.CursorPagination",
    "PAGE_SIZE": 100,
    # The OpenAPI schema at /api/schema/ (annotations/api/schema.py says how to describe a view).
    "DEFAULT_SCHEMA_CLASS": "annotations.api.schema.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "dataprepops API",
    "DESCRIPTION": (
        "Projects, items, annotations, review, data browser, analyses and dataset versions. "
        "Authenticate with `Authorization: Token <token>` (POST username and password to "
        "`/api/auth/token/`) or a logged-in session (then send the CSRF token on writes)."
    ),
    "VERSION": "1",
    "SCHEMA_PATH_PREFIX": "/api/",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs page need a login, like everything else.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "ReviewStatusEnum": "annotations.models.Review.Status",
        "AnalysisRunStatusEnum": "curation.dataset_models.AnalysisRun.Status",
        "LabelIssueStatusEnum": "curation.dataset_models.LabelIssue.Status",
    },
}

# Security. Secure cookies and HSTS whenever DEBUG is off; SECURE_SSL_REDIRECT is on by default
# in production and can be turned off behind a proxy that already redirects.
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Email, for password reset links. Unless EMAIL_BACKEND says otherwise, mails go to an SMTP
# server when EMAIL_HOST is set, else to the console (the log): the demo and a fresh install
# print the reset link instead of failing to send it.
EMAIL_HOST = env_str("EMAIL_HOST", "") or ""
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", bool(EMAIL_HOST) and not EMAIL_USE_SSL)  # STARTTLS
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL: set one of them, not both.")
EMAIL_PORT = env_int("EMAIL_PORT", 465 if EMAIL_USE_SSL else 587 if EMAIL_USE_TLS else 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "dataprepops@localhost")
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3 * 3600)  # seconds a link works

# Logging: one handler, on the root logger. Django's default config also puts a console handler
# on the "django" logger (in DEBUG), which printed each of its lines twice through the root's;
# "django" keeps no handler of its own here and follows LOG_LEVEL. 4xx responses are logged as
# one line, without the traceback of the PermissionDenied/Http404 that produced them.
LOG_LEVEL = (env_str("LOG_LEVEL", "INFO") or "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL={LOG_LEVEL!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "client_errors_without_traceback": {
            "()": "dataprep_site.log_filters.ClientErrorsWithoutTraceback"
        }
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["client_errors_without_traceback"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": [], "level": "NOTSET", "propagate": True},
        "django.channels.server": {"level": "WARNING"},
        # django-axes logs four INFO lines per login; its warnings (lockouts) are what matter.
        "axes": {"level": "WARNING"},
    },
}


# --- Abuse resistance: login lockout, API throttles, expiring tokens, CSP, no-store ----------
# (docs/security.md explains the choices.)
INSTALLED_APPS += ["axes", "knox", "csp"]
# CSP on every HTML page; no-store on every response for a logged-in user and the per-address
# login rate (both after the session is read); Axes last before WhiteNoise, so it turns a lockout
# anywhere into its lockout response.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "csp.middleware.CSPMiddleware",
)
_AFTER_AUTH = MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
MIDDLEWARE[_AFTER_AUTH:_AFTER_AUTH] = [
    "annotations.security.NoStoreMiddleware",
    "annotations.security.LoginRateMiddleware",
]
MIDDLEWARE.insert(
    MIDDLEWARE.index("whitenoise.middleware.WhiteNoiseMiddleware"), "axes.middleware.AxesMiddleware"
)

# Axes checks the lockout before any password is hashed (it is the first backend). Failures
# count per username AND client address together: an attacker cannot lock a colleague out from
# their own desk, and a team behind one NAT address does not share one counter.
AUTHENTICATION_BACKENDS = [
    "annotations.security.LockoutBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HTTP_RESPONSE_CODE = 429
AXES_LOCKOUT_CALLABLE = "annotations.security.lockout_response"

# Throttles need a cache all server processes share: Redis when there is one.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "dataprep",
    }
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"] = [
    "rest_framework.authentication.SessionAuthentication",
    "annotations.api.authentication.ExpiringTokenAuthentication",
]
# An annotator at full speed makes 2-3 requests a label, a few labels a second at most.
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "rest_framework.throttling.AnonRateThrottle",
    "rest_framework.throttling.UserRateThrottle",
]
# Throttles count per REMOTE_ADDR, which the ASGI server already takes from a trusted proxy's
# X-Forwarded-For; DRF's default (None) would believe any client's X-Forwarded-For header.
REST_FRAMEWORK["NUM_PROXIES"] = 0
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    "anon": env_str("API_ANON_RATE", "60/min"),
    "user": env_str("API_USER_RATE", "1200/min"),
    "token": env_str("API_TOKEN_RATE", "10/min"),
    "login": env_str("LOGIN_RATE", "20/min"),  # login page POSTs per address, any username
}
_TOKEN_TTL_HOURS = env_int("API_TOKEN_TTL_HOURS", 7 * 24)
if _TOKEN_TTL_HOURS <= 0:
    raise ImproperlyConfigured(f"API_TOKEN_TTL_HOURS={_TOKEN_TTL_HOURS} must be positive.")
API_TOKEN_TTL = timedelta(hours=_TOKEN_TTL_HOURS)
REST_KNOX = {"TOKEN_TTL": API_TOKEN_TTL, "AUTH_HEADER_PREFIX": "Token"}

# No inline script or style anywhere (values such as bar widths and label colours are set from
# static JS, see static/js/styles.js). Item images come from this site; data: is the favicon.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],  # CSP 3: 'self' covers ws:/wss: to this host too
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}
