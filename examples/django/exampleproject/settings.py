"""Settings of the example project: Redis and the database come from the environment.

``SIGBROKER_URL`` (default ``redis://localhost:6379/0``) and
``SIGBROKER_NAMESPACE`` (default ``example``) name the broker; ``DATABASE``
is the path of the SQLite file (default ``db.sqlite3`` next to manage.py).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "sigbroker.contrib.django",
    "orders",  # sends orders.signals.order_created when an order's transaction commits
    "notifications",  # its receivers run in `manage.py sigbroker worker`
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DATABASE") or BASE_DIR / "db.sqlite3",
    }
}

SIGBROKER_URL = os.environ.get("SIGBROKER_URL", "redis://localhost:6379/0")
SIGBROKER_NAMESPACE = os.environ.get("SIGBROKER_NAMESPACE", "example")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"notifications": {"handlers": ["console"], "level": "INFO"}},
}
