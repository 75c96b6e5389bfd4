"""OLVM engine settings.

Everything that differs between machines comes from the environment, with an explicit
default that works for `make run` on one machine:

- DATABASE_URL   default: the embedded SQLite file var/olvm.sqlite3
- REDIS_URL      default: redis://127.0.0.1:6379/0 (Celery broker + Channels layer)
- OLVM_SECRET_KEY, OLVM_DEBUG, OLVM_ALLOWED_HOSTS
"""

import os
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("OLVM_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("OLVM_DEBUG", False)
# The default key is only for the single-machine embedded set-up; `make run` writes a
# random one to var/secret_key and exports it.
SECRET_KEY = os.environ.get("OLVM_SECRET_KEY", "olvm-insecure-development-key-change-me")
ALLOWED_HOSTS = [h for h in os.environ.get("OLVM_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [
    o
    for o in os.environ.get("OLVM_CSRF_TRUSTED_ORIGINS", "http://127.0.0.1:8000,http://localhost:8000").split(",")
    if o
]

INSTALLED_APPS = [
    "daphne",
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
    "django_tables2",
    "channels",
    "inventory",
    "networking",
    "storage",
    "compute",
    "portals",
    "hostagent",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "olvm_site.urls"

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
                "portals.context_processors.portal",
            ],
        },
    },
]

WSGI_APPLICATION = "olvm_site.wsgi.application"
ASGI_APPLICATION = "olvm_site.asgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'olvm.sqlite3'}"),
        conn_max_age=int(os.environ.get("OLVM_DB_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database serves web, worker and beat at once: wait for locks
    # instead of failing, and take the write lock at BEGIN so nothing deadlocks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
NODE_MODULES = BASE_DIR / "node_modules"
# Front-end libraries come from npm (package.json) at set-up time; whitenoise serves
# their dist folders under /static/vendor/<name>/ without copying them into the repo.
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/bootstrap", NODE_MODULES / "bootstrap" / "dist"),
    ("vendor/bootstrap-icons", NODE_MODULES / "bootstrap-icons" / "font"),
    ("vendor/htmx", NODE_MODULES / "htmx.org" / "dist"),
    ("vendor/chart.js", NODE_MODULES / "chart.js" / "dist"),
    ("vendor/xterm/lib", NODE_MODULES / "@xterm" / "xterm" / "lib"),
    ("vendor/xterm/css", NODE_MODULES / "@xterm" / "xterm" / "css"),
    ("vendor/xterm-addon-fit", NODE_MODULES / "@xterm" / "addon-fit" / "lib"),
    # noVNC is ES modules: core/ imports ../vendor/pako/, so both keep their places.
    ("vendor/novnc/core", NODE_MODULES / "@novnc" / "novnc" / "core"),
    ("vendor/novnc/vendor", NODE_MODULES / "@novnc" / "novnc" / "vendor"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG or env_bool("OLVM_PLAIN_STATIC", False)
            else "whitenoise.storage.CompressedStaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True

SESSION_ENGINE = "olvm_site.sessions"

LOGIN_URL = "portals:login"
LOGIN_REDIRECT_URL = "portals:dashboard"
LOGOUT_REDIRECT_URL = "portals:login"

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# The periodic load balancer and affinity enforcer run this often (seconds; 0 = off).
OLVM_BALANCE_INTERVAL = float(os.environ.get("OLVM_BALANCE_INTERVAL", "60"))
CELERY_BEAT_SCHEDULE = {
    "host-liveness": {"task": "inventory.tasks.host_liveness_task", "schedule": 10.0},
    "job-reaper": {"task": "inventory.tasks.reap_stale_jobs_task", "schedule": 60.0},
    "certificate-renewal": {"task": "inventory.tasks.renew_certificates_task", "schedule": 6 * 3600.0},
    "history-retention": {"task": "inventory.tasks.history_retention_task", "schedule": 300.0},
    "storage-domain-monitor": {"task": "storage.tasks.monitor_storage_domains_task", "schedule": 60.0},
}
if OLVM_BALANCE_INTERVAL > 0:
    CELERY_BEAT_SCHEDULE["load-balancing"] = {
        "task": "compute.tasks.balance_clusters_task",
        "schedule": OLVM_BALANCE_INTERVAL,
    }
# Monitoring history (inventory/history.py): buffered samples are written at most this often per process.
OLVM_HISTORY_FLUSH_SECONDS = float(os.environ.get("OLVM_HISTORY_FLUSH_SECONDS", "10"))
# Seconds without progress after which a started Job whose worker died is ended failed.
OLVM_JOB_STALE_SECONDS = int(os.environ.get("OLVM_JOB_STALE_SECONDS", "600"))
OLVM_HOST_HEARTBEAT_TIMEOUT = int(os.environ.get("OLVM_HOST_HEARTBEAT_TIMEOUT", "60"))
# Live migration: libvirt's peer-to-peer URI of a destination ({address}: its migration
# address), the longest a migration may run, how long one waits for a free slot, how often
# its progress is polled; how long maintenance waits for its VMs to leave.
OLVM_MIGRATION_URI = os.environ.get("OLVM_MIGRATION_URI", "qemu+tcp://{address}/system")
OLVM_MIGRATION_TIMEOUT = float(os.environ.get("OLVM_MIGRATION_TIMEOUT", "900"))
OLVM_MIGRATION_SLOT_WAIT = float(os.environ.get("OLVM_MIGRATION_SLOT_WAIT", "600"))
OLVM_MIGRATION_POLL = float(os.environ.get("OLVM_MIGRATION_POLL", "0.5"))
OLVM_MAINTENANCE_TIMEOUT = float(os.environ.get("OLVM_MAINTENANCE_TIMEOUT", "900"))

# The engine CA and certificates (inventory/certs.py): created on first use.
OLVM_PKI_DIR = Path(os.environ.get("OLVM_PKI_DIR", VAR_DIR / "pki"))
OLVM_CERT_DAYS = int(os.environ.get("OLVM_CERT_DAYS", "398"))
OLVM_CERT_RENEW_DAYS = int(os.environ.get("OLVM_CERT_RENEW_DAYS", "30"))
# The agents' push (docs/ingest.md): where `manage.py ingest` listens (ADDR:PORT, comma
# separated; the lab bridge is 10.213.0.1) and the intervals it hands to agents.
OLVM_INGEST_LISTEN = os.environ.get("OLVM_INGEST_LISTEN", "127.0.0.1:54322")
OLVM_AGENT_HEARTBEAT_INTERVAL = float(os.environ.get("OLVM_AGENT_HEARTBEAT_INTERVAL", "2"))
OLVM_AGENT_STATS_INTERVAL = float(os.environ.get("OLVM_AGENT_STATS_INTERVAL", "5"))
OLVM_AGENT_GUEST_INFO_INTERVAL = float(os.environ.get("OLVM_AGENT_GUEST_INFO_INTERVAL", "10"))
# Host deploy: seconds to wait for a freshly started agent to answer.
OLVM_DEPLOY_AGENT_WAIT = float(os.environ.get("OLVM_DEPLOY_AGENT_WAIT", "30"))
# Remote (non-lab) hosts are deployed over SSH with this key (docs/deploy.md).
OLVM_DEPLOY_SSH_KEY = os.environ.get("OLVM_DEPLOY_SSH_KEY", "")
OLVM_DEPLOY_SSH_USER = os.environ.get("OLVM_DEPLOY_SSH_USER", "root")
# The address hosts reach the engine's ingest listener on (remote hosts; lab hosts use the bridge).
OLVM_ENGINE_ADDRESS = os.environ.get("OLVM_ENGINE_ADDRESS", "")

# The hot cache: the newest stats sample of every host and VM, JSON under olvm:stats:* (written
# by the publisher thread of inventory/publish.py, one script call per batch of host reports).
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("OLVM_CACHE_URL", REDIS_URL),
        "KEY_PREFIX": "olvm",
        "TIMEOUT": 300,
    }
}

# Live updates to the pages: Redis publish/subscribe (olvm_site/channel_layer.py). Channels of
# publish/subscribe span every database of a Redis server, so the prefix names the database:
# engines (and test runs) on other databases of the same server never hear each other.
OLVM_CHANNEL_PREFIX = f"olvm{urlsplit(REDIS_URL).path.strip('/') or '0'}:"
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "olvm_site.channel_layer.PubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": OLVM_CHANNEL_PREFIX, "capacity": 1500},
    }
}

REST_FRAMEWORK = {
    # Token first: the first class names the scheme of WWW-Authenticate, so a missing or bad
    # token is a 401 that says "Token" (with SessionAuthentication first DRF answers 403).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["inventory.api.permissions.IsAdministrator"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "inventory.api.exceptions.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "OLVM REST API",
    "DESCRIPTION": "The engine's inventory and operations. Long operations return a Job.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v[0-9]+",
    # Several models have a `status` (and two an `interface`) with different choices:
    # name each enum after its choices class so the schema has no collisions.
    "ENUM_NAME_OVERRIDES": {
        "DataCenterStatusEnum": "inventory.choices.DataCenterStatus",
        "HostStatusEnum": "inventory.choices.HostStatus",
        "JobStatusEnum": "inventory.choices.JobStatus",
        "StepStatusEnum": "inventory.choices.StepStatus",
        "VmStatusEnum": "compute.choices.VmStatus",
        "AffinityRuleEnum": "compute.choices.AffinityRule",
        "SnapshotStatusEnum": "compute.choices.SnapshotStatus",
        "StorageDomainStatusEnum": "storage.choices.StorageDomainStatus",
        "DiskStatusEnum": "storage.choices.DiskStatus",
        "DiskInterfaceEnum": "storage.choices.DiskInterface",
        "NicInterfaceEnum": "networking.choices.NicInterface",
        "ObjectTypeEnum": "inventory.choices.ObjectType",
        "PermissionObjectTypeEnum": "inventory.choices.PermissionObjectType",
    },
}

DJANGO_TABLES2_TEMPLATE = "django_tables2/bootstrap5.html"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("OLVM_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
