"""Delegate settings. Configuration comes only from environment variables (docs/configuration.md).

The defaults are the embedded demo: SQLite, a filesystem broker when REDIS_URL is unset, and
the local AWS sandbox. Production sets DATABASE_URL, REDIS_URL, DJANGO_SECRET_KEY,
DELEGATE_AUDIT_DIGEST_KEY, DELEGATE_SECURE=true and real AWS credentials. With DEBUG off, a
process refuses to start without a real secret key and a digest key (one line on stderr saying
how to make one); `python3 dev.py demo` generates both into var/.
"""
import os
import sys
from pathlib import Path

import environ

from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("DELEGATE_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()


def refuse_to_start(message: str) -> None:
    """One line on stderr and exit 1: clearer than a traceback for a deployment mistake."""
    sys.exit(f"Delegate will not start: {message}")


# Compose passes an unset optional variable as an empty string; botocore would take an empty
# endpoint or key literally, so empty AWS settings mean "unset" (real AWS endpoints, instance role).
for _name in [name for name, value in os.environ.items() if name.startswith("AWS_") and value == ""]:
    del os.environ[_name]

# GENERAL
# https://docs.djangoproject.com/en/5.2/ref/settings/#debug
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# No fallback key: with DEBUG off a missing key, or one published in this repository, refuses to start.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
KNOWN_DEFAULT_SECRET_KEYS = {
    "django-insecure-delegate-demo-key-change-me",  # the old settings fallback
    "change-me-in-production-please-0123456789abcdef",  # the old docker-compose fallback
    "build-only",  # the Dockerfile's collectstatic step
}
if not DEBUG and (not SECRET_KEY or SECRET_KEY in KNOWN_DEFAULT_SECRET_KEYS
                  or SECRET_KEY.startswith("django-insecure-")):
    refuse_to_start("DJANGO_SECRET_KEY is missing or a published default; set it to a new secret, e.g. the output"
                    " of: python3 -c 'import secrets; print(secrets.token_urlsafe(50))'")
if not SECRET_KEY:
    SECRET_KEY = "django-insecure-delegate-debug-only"  # DEBUG on: a developer's machine
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
TIME_ZONE = "UTC"
USE_TZ = True
LANGUAGE_CODE = "en-us"
# The portal speaks English only; without translation machinery every template variable, filter and
# form label skips a gettext lookup (about a tenth of a list page's time, bench/pages.py).
USE_I18N = False
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "automations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "automations.ops.middleware.RequestIdMiddleware",
    # PostgreSQL unreachable: a fast 503 with Retry-After rather than a 500 (views only).
    "automations.ops.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Audits the 404s views give signed-in users (IDOR probes); see automations/audit/middleware.py.
    "automations.audit.middleware.DeniedAccessAuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # axes last, as its documentation asks: it reads the result of authentication.
    "axes.middleware.AxesMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The app's own folder, searched first (its admin/ and drf_spectacular/ overrides win), here
        # and in an installed wheel alike (BASE_DIR is the folder holding portal/ and automations/).
        "DIRS": [BASE_DIR / "automations" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "automations.web.context_processors.navigation",
            ],
        },
    },
]

# DATABASES
# https://django-environ.readthedocs.io/en/latest/types.html#environ-env-db-url
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'delegate.sqlite3'}")}
# Replace connections that died with a PostgreSQL restart (reliability-security.md §1.5).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A blackholed PostgreSQL must fail a connection attempt, not hang it (readyz, workers).
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=5))
    # No JIT: the portal's queries are short, and PostgreSQL compiled the approval queue's (a high cost
    # estimate at 1,000,000 requests) for 56 ms to save a few (docs/benchmarks.md).
    DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs web, worker and beat on one SQLite file: wait for the write lock.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["CONN_MAX_AGE"] = 0

# AUTHENTICATION
# axes first (refuses locked-out pairs), then local passwords (honours DELEGATE_LOCAL_LOGIN), then SSO.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "automations.identity.sso.LocalPasswordBackend",
    "automations.identity.sso.OidcBackend",
]
# false hides the password form and refuses password logins everywhere (the admin included);
# people then sign in with SSO only. API tokens are unaffected.
DELEGATE_LOCAL_LOGIN = env.bool("DELEGATE_LOCAL_LOGIN", default=True)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "automations:home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
# django-axes: lock a username+IP pair, so an attacker cannot lock out a lead by name alone.
# https://django-axes.readthedocs.io/en/latest/4_configuration.html
AXES_FAILURE_LIMIT = env.int("DELEGATE_LOGIN_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = env.float("DELEGATE_LOGIN_COOLOFF_HOURS", default=0.25)
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False  # its start-up banner is noise in every process
AXES_IPWARE_PROXY_COUNT = env.int("DELEGATE_TRUSTED_PROXY_COUNT", default=0)
# The same trusted-proxy rule as the audit log, so behind a proxy the "IP" is the client's, not the proxy's.
AXES_CLIENT_IP_CALLABLE = "automations.identity.sso.client_ip"
AXES_ENABLED = env.bool("DELEGATE_LOGIN_LOCKOUT", default=True)

# SINGLE SIGN-ON (OpenID Connect, mozilla-django-oidc); on when OIDC_RP_CLIENT_ID is set.
# https://mozilla-django-oidc.readthedocs.io/en/stable/settings.html ; docs/security.md.
# `manage.py oidc_discover ISSUER` prints these from the provider's discovery document.
OIDC_RP_CLIENT_ID = env.str("OIDC_RP_CLIENT_ID", default="")
OIDC_RP_CLIENT_SECRET = env.str("OIDC_RP_CLIENT_SECRET", default="")
DELEGATE_OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID)
OIDC_OP_ISSUER = env.str("OIDC_OP_ISSUER", default="")  # the id token's `iss` must equal this
OIDC_OP_AUTHORIZATION_ENDPOINT = env.str("OIDC_OP_AUTHORIZATION_ENDPOINT", default="")
OIDC_OP_TOKEN_ENDPOINT = env.str("OIDC_OP_TOKEN_ENDPOINT", default="")
OIDC_OP_USER_ENDPOINT = env.str("OIDC_OP_USER_ENDPOINT", default="")
OIDC_OP_JWKS_ENDPOINT = env.str("OIDC_OP_JWKS_ENDPOINT", default="")
OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_USE_PKCE = True  # authorization code + PKCE (S256) + nonce + state
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT_SECONDS", default=10.0)
OIDC_STORE_ACCESS_TOKEN = False  # the provider's tokens never reach our session store
OIDC_STORE_ID_TOKEN = False
LOGIN_REDIRECT_URL_FAILURE = "/accounts/login/?sso=failed"
DELEGATE_OIDC_USERNAME_CLAIM = env.str("DELEGATE_OIDC_USERNAME_CLAIM", default="preferred_username")
DELEGATE_OIDC_GROUPS_CLAIM = env.str("DELEGATE_OIDC_GROUPS_CLAIM", default="groups")
# A local account with the same username is linked on first SSO login only when this is true
# (e.g. when moving existing users to SSO); otherwise that login is refused and audited.
DELEGATE_OIDC_LINK_EXISTING = env.bool("DELEGATE_OIDC_LINK_EXISTING", default=False)
# The Django group whose members are auditors (it carries automations.view_all_requests).
DELEGATE_AUDITOR_GROUP = env.str("DELEGATE_AUDITOR_GROUP", default="auditors")

# STATIC FILES
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# SECURITY
# DELEGATE_SECURE=true behind HTTPS turns on every transport protection `check --deploy` asks for.
SECURE = env.bool("DELEGATE_SECURE", default=False)
SESSION_COOKIE_SECURE = SECURE
CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE and env.bool("DELEGATE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = 31536000 if SECURE else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE
SECURE_HSTS_PRELOAD = SECURE
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None
# Probes and the scraper may talk plain HTTP to the container; everything else is redirected.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env.int("DELEGATE_SESSION_SECONDS", default=8 * 3600)
# How many reverse proxies append to X-Forwarded-For; 0 = use REMOTE_ADDR only (never trust the header).
TRUSTED_PROXY_COUNT = env.int("DELEGATE_TRUSTED_PROXY_COUNT", default=0)

# Content Security Policy, django-csp 4.x. No inline script anywhere: scripts carry the nonce.
# https://django-csp.readthedocs.io/en/latest/configuration.html
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "font-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# REST FRAMEWORK
REST_FRAMEWORK = {
    # Token first: its WWW-Authenticate header makes "no credentials" a 401 rather than a 403.
    # Session-authenticated writes are CSRF-checked by SessionAuthentication.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The API speaks JSON only: one body format to validate, and no form posts from other sites.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "automations.api.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Delegate API",
    "DESCRIPTION": "Request, approve and follow AWS Systems Manager Automation runs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Error statuses and bodies for every operation (schemathesis checks them against the server).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "automations.api.schema.postprocess_error_responses"],
}

# CELERY
# Redis in production; without REDIS_URL the demo uses kombu's filesystem transport, which
# needs no server and works across processes on one machine.
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL or "filesystem://")
# https://docs.celeryq.dev/en/stable/getting-started/backends-and-brokers/redis.html#visibility-timeout
REDIS_BROKER_TRANSPORT_OPTIONS = {
    # Unacked messages of a killed worker come back after this; keep it above task_time_limit.
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600),
    # ...checked this often (kombu's default is 10 s x 10).
    "unacked_restore_interval": env.int("CELERY_UNACKED_RESTORE_SECONDS", default=30),
    "unacked_restore_throttle": 1,
    # A publish (in a web request, on commit) must fail fast when Redis is down or hung:
    # one connection attempt and bounded socket waits. Without socket_timeout a hung
    # Redis blocks apply_async forever; measured in docs/operations.md.
    "max_retries": 0,
    "socket_connect_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=2.0),
    "socket_timeout": env.float("CELERY_BROKER_SOCKET_TIMEOUT", default=2.0),
}
CELERY_BROKER_TRANSPORT_OPTIONS = (
    REDIS_BROKER_TRANSPORT_OPTIONS
    if CELERY_BROKER_URL.startswith("redis")
    else {"data_folder_in": str(BROKER_DIR), "data_folder_out": str(BROKER_DIR),
          "processed_folder": str(BROKER_DIR / "processed"), "store_processed": False,
          "control_folder": str(BROKER_DIR / "control")}
)
# https://docs.celeryq.dev/en/stable/userguide/configuration.html
CELERY_TASK_ACKS_LATE = True  # safe: dispatch is idempotent (status claim + SSM ClientToken)
CELERY_TASK_REJECT_ON_WORKER_LOST = True  # otherwise a SIGKILLed child's message is acked and lost
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]  # the broker is untrusted; never unpickle
CELERY_TASK_IGNORE_RESULT = True  # task state lives in the database
CELERY_TASK_TIME_LIMIT = 120
CELERY_TASK_SOFT_TIME_LIMIT = 90
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless told to keep it
# for this many; automations.tasks closes it instead when CONN_MAX_AGE or an error says so.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
# Publishing happens in web requests: keep it short so a dead broker cannot hang them
# (with the transport options above; the outbox sweeper publishes whatever failed).
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_TASK_PUBLISH_RETRY = False
# How often a signed digest pins the chain's head (docs/audit.md); 10 s at the shortest.
DELEGATE_AUDIT_DIGEST_SECONDS = env.float("DELEGATE_AUDIT_DIGEST_SECONDS", default=60.0)
if DELEGATE_AUDIT_DIGEST_SECONDS < 10:
    refuse_to_start(f"DELEGATE_AUDIT_DIGEST_SECONDS={DELEGATE_AUDIT_DIGEST_SECONDS:g} is below the 10 s minimum.")
CELERY_BEAT_SCHEDULE = {
    "sync-execution-statuses": {
        "task": "automations.sync_execution_statuses",
        "schedule": env.float("DELEGATE_STATUS_POLL_SECONDS", default=5.0),
    },
    "sweep-dispatch-outbox": {
        "task": "automations.sweep_dispatch_outbox",
        "schedule": env.float("DELEGATE_OUTBOX_SWEEP_SECONDS", default=10.0),
    },
    "expire-requests": {"task": "automations.expire_requests", "schedule": 60.0},
    # Signed digests of the audit chain's head, outside the database (docs/audit.md).
    "write-audit-digest": {"task": "automations.write_audit_digest", "schedule": DELEGATE_AUDIT_DIGEST_SECONDS},
    # Escalations, approvals held by a freeze, aws:approve steps waiting; lost notifications.
    "approvals-tick": {"task": "automations.approvals_tick",
                       "schedule": env.float("DELEGATE_APPROVALS_TICK_SECONDS", default=15.0)},
    "sweep-notifications": {"task": "automations.sweep_notifications", "schedule": 60.0},
    "sync-runbook-catalog": {
        "task": "automations.sync_runbook_catalog",
        "schedule": env.float("DELEGATE_CATALOG_SYNC_SECONDS", default=3600.0),
    },
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# DELEGATE
# The sandbox (manage.py sandbox) stands in for AWS when these point at it; see docs/configuration.md.
DELEGATE_DEFAULT_REGION = env.str("AWS_DEFAULT_REGION", default="eu-west-1")
# Put back after throttling or the concurrency limit: a delay held in the database, not a countdown.
DELEGATE_DISPATCH_RETRY_SECONDS = env.float("DELEGATE_DISPATCH_RETRY_SECONDS", default=5.0)
# A request waiting for a per-target lock (TeamRunbook.one_run_per_target) looks again after this long.
DELEGATE_TARGET_LOCK_RETRY_SECONDS = env.float("DELEGATE_TARGET_LOCK_RETRY_SECONDS", default=10.0)
# Multi-account runs: the role SSM assumes in each member account (TargetLocations ExecutionRoleName).
# Never from the user: the Start body builder takes it from here.
DELEGATE_EXECUTION_ROLE_NAME = env.str("DELEGATE_EXECUTION_ROLE_NAME",
                                       default="AWS-SystemsManager-AutomationExecutionRole")
# Multi-account runs: Delegate's read-only role in each member account; a child execution's steps
# are read there, in the child's own account and Region (AWS answers children where they run).
DELEGATE_MEMBER_READ_ROLE_NAME = env.str("DELEGATE_MEMBER_READ_ROLE_NAME", default="DelegateMemberReadOnly")
# The Region Organizations is called in (its endpoint is global; us-east-1 in the commercial partition).
DELEGATE_ORGANIZATIONS_REGION = env.str("DELEGATE_ORGANIZATIONS_REGION", default="us-east-1")
# Delegate's own cap on running executions per account and region, under AWS's 100.
DELEGATE_MAX_RUNNING_PER_REGION = env.int("DELEGATE_MAX_RUNNING_PER_REGION", default=80)
# Shared pacing of AWS calls per account, region and API class (calls per second).
DELEGATE_AWS_RATE_LIMITS = {
    "start": env.float("DELEGATE_RATE_START", default=1.0),
    "stop": env.float("DELEGATE_RATE_STOP", default=1.0),
    "read": env.float("DELEGATE_RATE_READ", default=3.0),
    "signal": env.float("DELEGATE_RATE_SIGNAL", default=3.0),
    "preview": env.float("DELEGATE_RATE_PREVIEW", default=1.0),  # StartExecutionPreview
    "preview_read": env.float("DELEGATE_RATE_PREVIEW", default=1.0),  # GetExecutionPreview
}
# How long submit and dispatch wait for GetExecutionPreview to reach Success or Failed.
DELEGATE_EXECUTION_PREVIEW_WAIT_SECONDS = env.float("DELEGATE_EXECUTION_PREVIEW_WAIT_SECONDS", default=10.0)
# A request held by a CLOSED change calendar looks again at least this often (the calendar may change).
DELEGATE_CALENDAR_RECHECK_SECONDS = env.float("DELEGATE_CALENDAR_RECHECK_SECONDS", default=900.0)
DELEGATE_REQUEST_EXPIRY_HOURS = env.float("DELEGATE_REQUEST_EXPIRY_HOURS", default=72.0)
DELEGATE_APPROVAL_VALIDITY_HOURS = env.float("DELEGATE_APPROVAL_VALIDITY_HOURS", default=24.0)
# Approval policy and notifications (docs/approvals-and-policy.md). Per-policy values override these.
DELEGATE_MAX_SCHEDULE_DAYS = env.float("DELEGATE_MAX_SCHEDULE_DAYS", default=30.0)
DELEGATE_MAX_DELEGATION_DAYS = env.float("DELEGATE_MAX_DELEGATION_DAYS", default=90.0)
# The portal's public URL for links in mail and webhooks. DELEGATE_SITE_URL is the name the
# docs use; DELEGATE_BASE_URL is still read for existing deployments. dev.py sets it from PORT.
DELEGATE_SITE_URL = env.str("DELEGATE_SITE_URL", default=env.str("DELEGATE_BASE_URL", default="http://127.0.0.1:8000"))
DELEGATE_BASE_URL = DELEGATE_SITE_URL
DELEGATE_NOTIFY_MAX_ATTEMPTS = env.int("DELEGATE_NOTIFY_MAX_ATTEMPTS", default=8)
DELEGATE_NOTIFY_BACKOFF_SECONDS = env.float("DELEGATE_NOTIFY_BACKOFF_SECONDS", default=5.0)
DELEGATE_NOTIFY_TIMEOUT_SECONDS = env.float("DELEGATE_NOTIFY_TIMEOUT_SECONDS", default=5.0)
DELEGATE_OUTBOX_GRACE_SECONDS = env.float("DELEGATE_OUTBOX_GRACE_SECONDS", default=60.0)
# Longest put-back delay (the backoff doubles from DELEGATE_DISPATCH_RETRY_SECONDS up to this).
DELEGATE_DISPATCH_RETRY_MAX_SECONDS = env.float("DELEGATE_DISPATCH_RETRY_MAX_SECONDS", default=300.0)
# A claimed dispatch whose worker vanished is re-driven (same ClientToken) after this; above task_time_limit.
DELEGATE_DISPATCH_LEASE_SECONDS = env.float("DELEGATE_DISPATCH_LEASE_SECONDS", default=150.0)
# /metrics with DEBUG off answers only "Authorization: Bearer <token>" or a client address in the
# allowlist (addresses or CIDR networks; the client address honours DELEGATE_TRUSTED_PROXY_COUNT).
DELEGATE_METRICS_TOKEN = env.str("DELEGATE_METRICS_TOKEN", default="")
DELEGATE_METRICS_ALLOWED_IPS = env.list("DELEGATE_METRICS_ALLOWED_IPS", default=[])

# AUDIT (docs/audit.md). The digest key signs digests and archive manifests; required with DEBUG off.
DELEGATE_AUDIT_DIGEST_KEY = env.str("DELEGATE_AUDIT_DIGEST_KEY", default="")
if not DEBUG and not DELEGATE_AUDIT_DIGEST_KEY:
    refuse_to_start("DELEGATE_AUDIT_DIGEST_KEY is not set; it signs the audit digests. Make one (keep it off the"
                    " database host) with: python3 -c \"import base64, os; print('ed25519:' +"
                    " base64.b64encode(os.urandom(32)).decode())\"")
# Public keys (ed25519-pub:...) of keys the digest key replaced: old digests and manifests stay verifiable.
DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS = env.list("DELEGATE_AUDIT_DIGEST_PREVIOUS_KEYS", default=[])
DELEGATE_AUDIT_DIGEST_DIR = env.str("DELEGATE_AUDIT_DIGEST_DIR", default=str(VAR_DIR / "audit-digests"))
# Every committed event, also outside the database at once: file:/path, syslog+tcp://host:port,
# syslog+tls://host:port, or off (automations/audit_stream.py).
DELEGATE_AUDIT_STREAM = env.str("DELEGATE_AUDIT_STREAM", default=f"file:{VAR_DIR / 'audit-stream.jsonl'}")
DELEGATE_AUDIT_STREAM_QUEUE_SIZE = env.int("DELEGATE_AUDIT_STREAM_QUEUE_SIZE", default=10000)
DELEGATE_AUDIT_STREAM_TLS_CA = env.str("DELEGATE_AUDIT_STREAM_TLS_CA", default="")
# PostgreSQL: the application role that migrate (run as the owner role) grants runtime privileges to.
DELEGATE_DB_APP_ROLE = env.str("DELEGATE_DB_APP_ROLE", default="")

# EMAIL: the console backend in the demo.
EMAIL_BACKEND = env.str("DJANGO_EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
# Where the file-based backend writes messages (dev.py's demo uses it: var/mail/).
EMAIL_FILE_PATH = env.str("DJANGO_EMAIL_FILE_PATH", default=str(VAR_DIR / "mail"))
DEFAULT_FROM_EMAIL = env.str("DELEGATE_FROM_EMAIL", default="delegate@localhost")

# LOGGING: structured JSON lines (or readable console output), secrets masked in every line.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "automations.ops.logging.RedactSecretsFilter"}},
    "formatters": {
        "structured": {"()": "automations.ops.logging.structured_formatter", "output": LOG_FORMAT},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "structured", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # botocore at DEBUG prints request headers; keep it quieter unless asked explicitly.
        "botocore": {"level": env.str("BOTOCORE_LOG_LEVEL", default="WARNING")},
        "urllib3": {"level": "WARNING"},
    },
}
