"""The one settings module. Everything that differs between a laptop and production is an
environment variable; the defaults are the embedded mode (`make run`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url

from portal.env import env_bool, env_float, env_int, env_list, env_secret, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("PLINTH_DATA_DIR", str(BASE_DIR / "var"))).resolve()
# All local state (SQLite, broker folders, logs, MLflow store) lives here; SQLite cannot
# create its file in a folder that does not exist.
DATA_DIR.mkdir(parents=True, exist_ok=True)

PLINTH_ENV = env_str("PLINTH_ENV", "development")
PRODUCTION = PLINTH_ENV == "production"

_DEV_SECRET = "plinth-development-secret-do-not-use-in-production-0123456789"
SECRET_KEY = env_secret("PLINTH_SECRET_KEY", "" if PRODUCTION else _DEV_SECRET)
if PRODUCTION and (not SECRET_KEY or SECRET_KEY == _DEV_SECRET):
    raise RuntimeError("PLINTH_SECRET_KEY (or PLINTH_SECRET_KEY_FILE) must be set in production")

DEBUG = env_bool("PLINTH_DEBUG", not PRODUCTION)
ALLOWED_HOSTS = env_list("PLINTH_ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost,testserver")
CSRF_TRUSTED_ORIGINS = env_list("PLINTH_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "template_partials",
    "django_celery_beat",
    "csp",
    "apps.core",
    "apps.accounts",
    "apps.access",
    "apps.audit",
    "apps.projects",
    "apps.tracking",
    "apps.compute",
    "apps.launches",
    "apps.registry",
    "apps.notifications",
    "apps.gpus",
    "apps.console",
    "apps.deployments",
    "apps.environments",
]

MIDDLEWARE = [
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.deadline.RequestBudgetMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.core.timezones.TimezoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "apps.core.input.NulCharacterMiddleware",
    "apps.core.middleware.ServiceErrorMiddleware",
]
# What a request to the inference gateway (/serve/…) passes through instead (portal/wsgi.py):
# callers authenticate with a token on every request, so sessions, CSRF, messages, CSP and
# htmx have nothing to do there. Its request id, outbound-call budget and the transport
# security (HTTPS redirect, HSTS) stay.
GATEWAY_MIDDLEWARE = [
    "apps.core.middleware.RequestIdMiddleware",
    "apps.core.deadline.RequestBudgetMiddleware",
    "django.middleware.security.SecurityMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

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
                "apps.core.context_processors.navigation",
            ],
            # `|when`: every time on a page, in the viewer's zone and labelled.
            "builtins": ["apps.core.templatetags.when", "apps.core.templatetags.wording"],
        },
    }
]

# --- database -------------------------------------------------------------------------
_sqlite_path = DATA_DIR / "plinth.sqlite3"
DATABASES = {
    "default": dj_database_url.parse(
        env_secret("DATABASE_URL", f"sqlite:///{_sqlite_path}"),
        conn_max_age=env_int("PLINTH_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,  # a persistent connection that broke is replaced, not used
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded mode shares one SQLite file between the web server, the worker and
    # beat: WAL and IMMEDIATE transactions keep concurrent writers from failing. Connections
    # persist (PLINTH_DB_CONN_MAX_AGE, as with PostgreSQL) instead of one per request, which
    # cost the gateway a WAL pragma to open and a checkpoint to close: safe with WAL, where
    # an idle connection in autocommit holds no lock and no snapshot between transactions.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Tests run on a file too (one per test process), not Django's default shared-cache
    # in-memory database: there a worker thread writing locks whole tables against every
    # other connection ("database table is locked", which no busy timeout waits out), so
    # tests with a real worker would not see the embedded mode's WAL and busy timeout.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    # View permissions in the Django admin for platform admins (it authenticates nobody).
    "apps.accounts.backends.PlatformAdminPermissions",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("PLINTH_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- static files: the portal's own, htmx and plotly.js (static/vendor, from their ------
# packages: apps.core.vendor). `collectstatic` (make install, the Dockerfile) writes them
# with a content hash in the name, gzip and brotli beside them: whitenoise serves those
# compressed and cacheable for a year, in both modes. Before any collectstatic (a fresh
# checkout, the tests) pages link the plain names, served from static/ (finders).
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("PLINTH_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
WHITENOISE_USE_FINDERS = not PRODUCTION  # serve straight from static/ while developing
WHITENOISE_KEEP_ONLY_HASHED_FILES = True  # compress each file once, not its unhashed copy too
STATICFILES_DIRS: list[tuple[str, Path] | Path] = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "apps.core.staticfiles.CollectedOrSourceStorage"
        )
    },
}

# --- Content-Security-Policy on every response (django-csp): no inline script, no eval.
# Chart data is JSON in json_script elements, behaviour is static JS and htmx attributes.
# Styles may be inline: plotly.js and htmx set style attributes and <style> rules.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- security (check --deploy clean in production) ------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env_int("PLINTH_SESSION_AGE", 60 * 60 * 12)
CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the page, not the cookie
CSRF_FAILURE_VIEW = "apps.core.views.csrf_failure"  # the error page, with the reason
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env_bool("PLINTH_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("PLINTH_HSTS_SECONDS", 60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("PLINTH_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("PLINTH_HSTS_PRELOAD", True)

# --- cache: rate-limit counters (shared across replicas when Redis is configured) -----
_cache_url = env_secret("PLINTH_CACHE_URL")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}
        if _cache_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "plinth"}
    )
}

# --- sign-in protection: failed attempts per address and per account ---------------------
PLINTH_LOGIN_WINDOW_SECONDS = env_int("PLINTH_LOGIN_WINDOW_SECONDS", 15 * 60)
PLINTH_LOGIN_FAILURES_PER_USER = env_int("PLINTH_LOGIN_FAILURES_PER_USER", 10)
PLINTH_LOGIN_FAILURES_PER_IP = env_int("PLINTH_LOGIN_FAILURES_PER_IP", 50)
# Per account from every address together: far above the per-address limit (see apps.accounts.ratelimit).
PLINTH_LOGIN_ACCOUNT_CEILING = env_int("PLINTH_LOGIN_ACCOUNT_CEILING", 100)

# --- SSO: OpenID Connect (mozilla-django-oidc); off unless PLINTH_OIDC_CLIENT_ID is set ---
OIDC_RP_CLIENT_ID = env_str("PLINTH_OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = env_secret("PLINTH_OIDC_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("PLINTH_OIDC_AUTHORIZATION_ENDPOINT")
OIDC_OP_TOKEN_ENDPOINT = env_str("PLINTH_OIDC_TOKEN_ENDPOINT")
OIDC_OP_USER_ENDPOINT = env_str("PLINTH_OIDC_USERINFO_ENDPOINT")
OIDC_OP_JWKS_ENDPOINT = env_str("PLINTH_OIDC_JWKS_ENDPOINT")
OIDC_OP_LOGOUT_ENDPOINT = env_str("PLINTH_OIDC_LOGOUT_ENDPOINT")
OIDC_RP_SIGN_ALGO = env_str("PLINTH_OIDC_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = env_str("PLINTH_OIDC_SCOPES", "openid email profile groups")
OIDC_TIMEOUT = env_float("PLINTH_OIDC_TIMEOUT", 5.0)
OIDC_USE_PKCE = env_bool("PLINTH_OIDC_USE_PKCE", True)
PLINTH_OIDC_USERNAME_CLAIM = env_str("PLINTH_OIDC_USERNAME_CLAIM", "preferred_username")
PLINTH_OIDC_GROUPS_CLAIM = env_str("PLINTH_OIDC_GROUPS_CLAIM", "groups")
PLINTH_OIDC_ENABLED = bool(OIDC_RP_CLIENT_ID and OIDC_OP_AUTHORIZATION_ENDPOINT and OIDC_OP_TOKEN_ENDPOINT)
if PLINTH_OIDC_ENABLED:
    AUTHENTICATION_BACKENDS.append("apps.accounts.oidc.PlinthOIDCBackend")

# --- REST API -------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # Strict JSON with NaN/inf metrics: they are written as "NaN"/"Infinity"/"-Infinity".
    "DEFAULT_RENDERER_CLASSES": [
        "apps.core.renderers.NumberSafeJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "apps.core.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "apps.core.schema.PlinthAutoSchema",
    "EXCEPTION_HANDLER": "apps.core.api.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Plinth API",
    "DESCRIPTION": "Self-service ML platform: teams, projects, launches, runs, promotions, GPUs.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---------------------------------------------------------------------------
# Embedded default: kombu's SQLAlchemy transport on a SQLite file of its own. A consumer
# claims a message inside one `BEGIN IMMEDIATE` transaction, so a message is never handed
# out twice nor read half-written (the filesystem transport could hand a worker a file
# that was created but not yet written, and the worker died on it). Redis in production.
CELERY_BROKER_URL = env_secret("CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'broker.sqlite3'}")
CELERY_BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("sqla+sqlite"):
    # Passed to SQLAlchemy's create_engine: wait for the write lock rather than fail at
    # once; the worker, beat and the web processes all write to this file, in WAL mode.
    from apps.core.sqlite import WalConnection

    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"connect_args": {"timeout": 30, "factory": WalConnection}}
elif CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "out"),
        "data_folder_out": str(CELERY_BROKER_DIR / "out"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
    for _folder in ("out", "processed", "control"):
        (CELERY_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
PLINTH_SYNC_SECONDS = env_float("PLINTH_SYNC_SECONDS", 3.0)  # the launch reconciler's period
CELERY_BEAT_SCHEDULE: dict[str, dict[str, Any]] = {
    "worker-heartbeat": {"task": "apps.core.tasks.heartbeat", "schedule": 30.0},
    "broker-prune": {"task": "apps.core.tasks.prune_broker_messages", "schedule": 3600.0},
    "sync-mlflow-experiments": {"task": "apps.projects.tasks.sync_pending_experiments", "schedule": 60.0},
    "registry-promotions": {
        "task": "apps.registry.tasks.reconcile_promotions",
        "schedule": env_float("PLINTH_PROMOTION_SYNC_SECONDS", 30.0),
    },
    "registry-aliases": {
        "task": "apps.registry.tasks.reconcile_aliases",
        "schedule": env_float("PLINTH_ALIAS_SYNC_SECONDS", 60.0),
    },
    "notifications-retry": {"task": "apps.notifications.tasks.retry_deliveries", "schedule": 30.0},
    "sync-launches": {"task": "apps.launches.tasks.sync_launches", "schedule": PLINTH_SYNC_SECONDS},
    "sync-access": {
        "task": "apps.console.tasks.reconcile_access",
        "schedule": env_float("PLINTH_ACCESS_SYNC_SECONDS", 300.0),
    },
}
PLINTH_WORKER_STALE_SECONDS = env_int("PLINTH_WORKER_STALE_SECONDS", 120)
# How long one reconciler pass may hold its lease before another may start (a pass that
# crashed frees it after this); see apps.core.leases.
PLINTH_RECONCILER_LEASE_SECONDS = env_int("PLINTH_RECONCILER_LEASE_SECONDS", 120)

# --- MLflow ---------------------------------------------------------------------------
MLFLOW_TRACKING_URI = env_str("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{env_int('PLINTH_MLFLOW_PORT', 5000)}")
MLFLOW_UI_URL = env_str("PLINTH_MLFLOW_UI_URL", MLFLOW_TRACKING_URI)
MLFLOW_TIMEOUT = env_float("PLINTH_MLFLOW_TIMEOUT", 5.0)
# History and artifact reads may take this long each (workers; web requests are capped below).
PLINTH_MLFLOW_HISTORY_TIMEOUT = env_float("PLINTH_MLFLOW_HISTORY_TIMEOUT", 120.0)
# Threads one request or task uses to read many runs' histories from MLflow at once.
PLINTH_MLFLOW_THREADS = env_int("PLINTH_MLFLOW_THREADS", 4)
# MLflow's backend store, read-only (a SQLAlchemy URL, e.g. a read replica): metric histories
# in one SQL query and exact cache checks (apps.tracking.store); empty: REST only.
PLINTH_MLFLOW_STORE_URI = env_secret("PLINTH_MLFLOW_STORE_URI")
# REST only: how long a cached cut history is served before it is read again (seconds).
PLINTH_METRIC_CACHE_MAX_AGE = env_float("PLINTH_METRIC_CACHE_MAX_AGE", 3600.0)
# Cut histories of runs that ended are computed in the background: every SCAN seconds, runs of
# linked experiments that ended in the last LOOKBACK seconds (apps.tracking.tasks).
PLINTH_METRIC_CACHE_SCAN_SECONDS = env_float("PLINTH_METRIC_CACHE_SCAN_SECONDS", 60.0)
PLINTH_METRIC_CACHE_LOOKBACK_SECONDS = env_float("PLINTH_METRIC_CACHE_LOOKBACK_SECONDS", 900.0)
CELERY_BEAT_SCHEDULE["metric-cache-finished-runs"] = {
    "task": "apps.tracking.tasks.cache_finished_runs",
    "schedule": PLINTH_METRIC_CACHE_SCAN_SECONDS,
}
CELERY_BEAT_SCHEDULE["metric-cache-prune"] = {"task": "apps.tracking.tasks.prune_metric_cache", "schedule": 3600.0}
# The runs table's column picker: an experiment's param/metric keys are cached this long
# (seconds; 0 reads them on every page).
PLINTH_RUN_KEYS_CACHE_SECONDS = env_int("PLINTH_RUN_KEYS_CACHE_SECONDS", 60)

# --- web requests: one time budget ------------------------------------------------------
# gunicorn's --timeout (portal/gunicorn.py) is PLINTH_WEB_TIMEOUT; the MLflow calls of one
# web request together get what is left after a margin for rendering the answer, so a slow
# MLflow yields a 503 page rather than a worker killed mid-request (apps.core.deadline).
PLINTH_WEB_TIMEOUT = env_int("PLINTH_WEB_TIMEOUT", 60)
PLINTH_WEB_MLFLOW_BUDGET = PLINTH_WEB_TIMEOUT - max(5.0, PLINTH_WEB_TIMEOUT / 6)
if PLINTH_WEB_MLFLOW_BUDGET < MLFLOW_TIMEOUT:
    raise RuntimeError(
        f"PLINTH_WEB_TIMEOUT={PLINTH_WEB_TIMEOUT} leaves {PLINTH_WEB_MLFLOW_BUDGET:g} s for MLflow calls, "
        f"less than PLINTH_MLFLOW_TIMEOUT={MLFLOW_TIMEOUT:g}: raise it"
    )
MLFLOW_TRACKING_USERNAME = env_str("MLFLOW_TRACKING_USERNAME")
MLFLOW_TRACKING_PASSWORD = env_secret("MLFLOW_TRACKING_PASSWORD")
# MLflow permission sync (when MLflow runs `--app-name basic-auth`): an MLflow admin account.
PLINTH_MLFLOW_ADMIN_USERNAME = env_str("PLINTH_MLFLOW_ADMIN_USERNAME")
PLINTH_MLFLOW_ADMIN_PASSWORD = env_secret("PLINTH_MLFLOW_ADMIN_PASSWORD")

# --- compute --------------------------------------------------------------------------
# New projects land where launches may run: the local backend is off in production by default.
PLINTH_DEFAULT_BACKEND = env_str("PLINTH_DEFAULT_BACKEND", "kubernetes" if PRODUCTION else "local")
PLINTH_KUBECONFIG = env_str("PLINTH_KUBECONFIG", os.environ.get("KUBECONFIG", ""))
PLINTH_KUBE_IN_CLUSTER = env_bool("PLINTH_KUBE_IN_CLUSTER", False)
PLINTH_KUBE_TIMEOUT = env_float("PLINTH_KUBE_TIMEOUT", 5.0)
PLINTH_KUBE_QPS = env_float("PLINTH_KUBE_QPS", 20.0)  # client-side rate limit towards the API server
# Where all processes count that rate together (a `limits` storage URI); empty: per process.
PLINTH_KUBE_RATELIMIT_STORAGE = env_secret(
    "PLINTH_KUBE_RATELIMIT_STORAGE",
    next((url for url in (_cache_url, CELERY_BROKER_URL) if url.startswith(("redis://", "rediss://"))), ""),
)
PLINTH_KUBE_JOB_TTL = env_int("PLINTH_KUBE_JOB_TTL", 60 * 60 * 24)  # ttlSecondsAfterFinished
PLINTH_KUBE_BACKOFF_LIMIT = env_int("PLINTH_KUBE_BACKOFF_LIMIT", 0)
PLINTH_KUBE_MLFLOW_SECRET = env_str("PLINTH_KUBE_MLFLOW_SECRET", "plinth-mlflow")
# A grid or random sweep runs as one Indexed Job (off: one Job per trial, as adaptive sweeps do).
PLINTH_KUBE_INDEXED_SWEEPS = env_bool("PLINTH_KUBE_INDEXED_SWEEPS", True)
# KServe (the kubernetes serving backend): where KServe's storage initializer finds the
# artifacts an MLflow server with --artifacts-destination serves as mlflow-artifacts:/…
# (e.g. s3://mlflow-artifacts), and how long a prediction sent to an InferenceService may take.
PLINTH_KSERVE_ARTIFACTS_DESTINATION = env_str("PLINTH_KSERVE_ARTIFACTS_DESTINATION")
PLINTH_KSERVE_PREDICT_TIMEOUT = env_float("PLINTH_KSERVE_PREDICT_TIMEOUT", 30.0)
PLINTH_LOCAL_MAX_CONCURRENT = env_int("PLINTH_LOCAL_MAX_CONCURRENT", 2)
# The local backend runs jobs as the worker's own OS user (no isolation beyond a clean
# environment and a working folder): off in production unless an operator opts in.
PLINTH_LOCAL_BACKEND_ENABLED = env_bool("PLINTH_LOCAL_BACKEND_ENABLED", not PRODUCTION)
# Deployments on the local backend: each revision's model server listens on 127.0.0.1 at a
# free port of this range ("first-last", inclusive).
PLINTH_SERVING_PORTS = env_str("PLINTH_SERVING_PORTS", "18100-18999")
# Deployments' rollout (apps.deployments.rollout): a revision that left the traffic stays warm
# this long for a one-click rollback; a new revision must pass its pre-flight (model server up,
# a 2xx answer on the input example) within PREFLIGHT seconds; every deployment is
# reconciled (alias followed, crashed model servers restarted) every SYNC seconds.
PLINTH_ROLLBACK_WINDOW_SECONDS = env_int("PLINTH_ROLLBACK_WINDOW_SECONDS", 1800)
PLINTH_PREFLIGHT_TIMEOUT_SECONDS = env_int("PLINTH_PREFLIGHT_TIMEOUT_SECONDS", 300)
PLINTH_DEPLOYMENT_SYNC_SECONDS = env_float("PLINTH_DEPLOYMENT_SYNC_SECONDS", 10.0)
CELERY_BEAT_SCHEDULE["deployments-reconcile"] = {
    "task": "apps.deployments.tasks.reconcile_deployments",
    "schedule": PLINTH_DEPLOYMENT_SYNC_SECONDS,
}
# Standard environments' local builds (apps.environments.builder): virtual environments live
# in PLINTH_ENVIRONMENTS_DIR (empty: <data dir>/environments); one build may run this long
# before it is stopped and failed; the reconciler re-sends lost builds every SYNC seconds.
PLINTH_ENVIRONMENTS_DIR = env_str("PLINTH_ENVIRONMENTS_DIR")
PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS = env_int("PLINTH_ENVIRONMENT_BUILD_TIMEOUT_SECONDS", 15 * 60)
CELERY_BEAT_SCHEDULE["environments-reconcile-builds"] = {
    "task": "apps.environments.tasks.reconcile_builds",
    "schedule": env_float("PLINTH_ENVIRONMENT_SYNC_SECONDS", 60.0),
}
# Access sync to the cluster: namespace, RoleBindings, ResourceQuota (and a Kueue
# LocalQueue) per Kubernetes-backed project. On by default wherever a cluster is configured.
PLINTH_KUBE_ACCESS_SYNC = env_bool("PLINTH_KUBE_ACCESS_SYNC", bool(PLINTH_KUBECONFIG or PLINTH_KUBE_IN_CLUSTER))
PLINTH_KUBE_USER_PREFIX = env_str("PLINTH_KUBE_USER_PREFIX")  # e.g. "oidc:" (the API server's --oidc-username-prefix)
PLINTH_KUBE_GROUP_PREFIX = env_str("PLINTH_KUBE_GROUP_PREFIX")  # e.g. "oidc:" (--oidc-groups-prefix)
PLINTH_KUBE_VIEW_CLUSTERROLE = env_str("PLINTH_KUBE_VIEW_CLUSTERROLE", "view")
PLINTH_KUBE_EDIT_CLUSTERROLE = env_str("PLINTH_KUBE_EDIT_CLUSTERROLE", "edit")
PLINTH_KUEUE_CLUSTER_QUEUE = env_str("PLINTH_KUEUE_CLUSTER_QUEUE")  # empty: no LocalQueue
# The tracking URI as jobs see it (inside a cluster it is often a different host name).
PLINTH_JOB_MLFLOW_URI = env_str("PLINTH_JOB_MLFLOW_URI")

# --- GPUs: sources (each optional), sampling, idle policy --------------------------------
PLINTH_PROMETHEUS_URL = env_str("PLINTH_PROMETHEUS_URL")
PLINTH_PROMETHEUS_TOKEN = env_secret("PLINTH_PROMETHEUS_TOKEN")
PLINTH_PROMETHEUS_TIMEOUT = env_float("PLINTH_PROMETHEUS_TIMEOUT", 10.0)
PLINTH_PROMETHEUS_POD_LABELS = env_str("PLINTH_PROMETHEUS_POD_LABELS", "auto")
PLINTH_GPU_KUBERNETES = env_bool("PLINTH_GPU_KUBERNETES", True)
PLINTH_GPU_NVML = env_bool("PLINTH_GPU_NVML", True)
PLINTH_GPU_SAMPLE_SECONDS = env_int("PLINTH_GPU_SAMPLE_SECONDS", 60)
PLINTH_GPU_RAW_RETENTION_DAYS = env_int("PLINTH_GPU_RAW_RETENTION_DAYS", 7)
PLINTH_GPU_HOURLY_RETENTION_DAYS = env_int("PLINTH_GPU_HOURLY_RETENTION_DAYS", 400)
PLINTH_GPU_IDLE_THRESHOLD = env_float("PLINTH_GPU_IDLE_THRESHOLD", 5.0)
PLINTH_GPU_IDLE_WINDOW_MINUTES = env_int("PLINTH_GPU_IDLE_WINDOW_MINUTES", 30)
PLINTH_GPU_IDLE_GRACE_MINUTES = env_int("PLINTH_GPU_IDLE_GRACE_MINUTES", 60)
PLINTH_GPU_HEATMAP_HOURS = env_int("PLINTH_GPU_HEATMAP_HOURS", 24)
PLINTH_GPU_PRICE_CURRENCY = env_str("PLINTH_GPU_PRICE_CURRENCY", "USD")
CELERY_BEAT_SCHEDULE.update(
    {
        "gpus-sample": {"task": "apps.gpus.tasks.sample_gpus", "schedule": float(PLINTH_GPU_SAMPLE_SECONDS)},
        "gpus-detect-idle": {"task": "apps.gpus.tasks.detect_idle_gpus", "schedule": 60.0},
        "gpus-roll-up": {"task": "apps.gpus.tasks.roll_up_gpu_samples", "schedule": 300.0},
    }
)
# A periodic message not started within its period is dropped (`expire_seconds` is how
# django-celery-beat's scheduler spells Celery's `expires`): a worker that was down or busy
# does not come back to a pile of stale passes that all run at once.
for _entry in CELERY_BEAT_SCHEDULE.values():
    _entry.setdefault("options", {})["expire_seconds"] = max(int(float(_entry["schedule"])), 1)

# --- promotions and notifications ------------------------------------------------------
# Links in emails and webhooks; by default where `make run` serves (PLINTH_PORT, as the
# embedded command reads it).
PLINTH_BASE_URL = env_str("PLINTH_BASE_URL", f"http://127.0.0.1:{env_int('PLINTH_PORT', 8000)}")
PLINTH_PROMOTION_APPLY_ATTEMPTS = env_int("PLINTH_PROMOTION_APPLY_ATTEMPTS", 5)
PLINTH_PROMOTION_RETRY_SECONDS = env_int("PLINTH_PROMOTION_RETRY_SECONDS", 5)
PLINTH_WEBHOOK_TIMEOUT = env_float("PLINTH_WEBHOOK_TIMEOUT", 5.0)
PLINTH_NOTIFY_MAX_ATTEMPTS = env_int("PLINTH_NOTIFY_MAX_ATTEMPTS", 5)
PLINTH_NOTIFY_RETRY_SECONDS = env_int("PLINTH_NOTIFY_RETRY_SECONDS", 30)
# Hosts (name or IP, optionally :port) and CIDR networks that user-set outbound URLs (team
# webhooks) may reach although they resolve to non-public addresses (apps.core.outbound).
PLINTH_OUTBOUND_ALLOWED_HOSTS = env_list("PLINTH_OUTBOUND_ALLOWED_HOSTS")

# --- demo data ------------------------------------------------------------------------
PLINTH_DEMO_PASSWORD = env_secret("PLINTH_DEMO_PASSWORD", "plinth-demo")

# --- email ----------------------------------------------------------------------------
EMAIL_BACKEND = env_str(
    "PLINTH_EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env_str("PLINTH_FROM_EMAIL", "plinth@localhost")

# --- logging: one JSON line per record, with the request id ---------------------------
LOG_LEVEL = env_str("PLINTH_LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "apps.core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "apps.core.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": "json" if env_bool("PLINTH_LOG_JSON", True) else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) would print every django.* record a
        # second time next to the root handler: one handler, the root's.
        "django": {"handlers": [], "propagate": True},
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
        "kombu.connection": {"level": "ERROR"},
    },
}
