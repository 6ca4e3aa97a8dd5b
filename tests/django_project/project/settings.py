"""Settings of the test project (tests/test_django_worker.py).

The database is a SQLite file named by ``SIGBROKER_TEST_DB``, so that the
test process and a worker subprocess share it; with ``SIGBROKER_TEST_PG``
(a database name) it is that PostgreSQL database on 127.0.0.1:5432 instead,
with persistent connections, for the database-restart test.
``SIGBROKER_TEST_REDIS_URL`` and ``SIGBROKER_TEST_NAMESPACE``, when set,
become the project's ``SIGBROKER_URL`` and ``SIGBROKER_NAMESPACE``.
"""

import os
import tempfile

SECRET_KEY = "not-a-secret: tests only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "sigbroker.contrib.django",
    "shop",
    "billing",
    # The seed's six signal modules (tests/test_django_seeds.py).
    "seeds",
    # The models of tests/test_django_payloads.py (label "store").
    "tests.django_shop",
]

SIGBROKER_EXCLUDE_FIELDS = {"store.Order": ["internal_note"]}
# Django's own post_save of shop.Order, forwarded after commit (tests/test_django_forwarding.py).
SIGBROKER_FORWARD = {"django.db.models.signals.post_save": ["shop.Order"]}
MEDIA_ROOT = os.path.join(tempfile.gettempdir(), "sigbroker-django-media")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if os.environ.get("SIGBROKER_TEST_PG"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["SIGBROKER_TEST_PG"],
            "HOST": "127.0.0.1",
            "PORT": "5432",
            "USER": os.environ.get("SIGBROKER_TEST_PG_USER", "postgres"),
            # Persistent connections: the worker keeps one across messages, so a
            # database restart between two messages leaves it holding a dead one.
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": True,
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SIGBROKER_TEST_DB")
            or os.path.join(tempfile.gettempdir(), "sigbroker-django-project.sqlite3"),
            "OPTIONS": {"timeout": 20},
        }
    }

if os.environ.get("SIGBROKER_TEST_REDIS_URL"):
    SIGBROKER_URL = os.environ["SIGBROKER_TEST_REDIS_URL"]
if os.environ.get("SIGBROKER_TEST_NAMESPACE"):
    SIGBROKER_NAMESPACE = os.environ["SIGBROKER_TEST_NAMESPACE"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
}
