"""Django in the test process, on tests/django_project's settings (once per session).

Django can be set up only once per process, so every test module that needs
the project in-process goes through :func:`setup_project`: the first call
sets it up on a SQLite file (which worker subprocesses share through
``SIGBROKER_TEST_DB``) and migrates it; later calls return the same file.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.helpers import ROOT

PROJECT = ROOT / "tests" / "django_project"
MANAGE = PROJECT / "manage.py"

_database: Path | None = None


def setup_project(directory: Path) -> Path:
    """Set Django up on the project's settings with a database in ``directory``; return it."""
    global _database
    if _database is not None:
        return _database
    import django
    from django.conf import settings

    if settings.configured:
        raise RuntimeError("Django was set up without tests/django_setup.py")
    database = directory / "db.sqlite3"
    os.environ["SIGBROKER_TEST_DB"] = str(database)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    sys.path.insert(0, str(PROJECT))
    django.setup()
    from django.core.management import call_command

    call_command("migrate", run_syncdb=True, verbosity=0)  # tests.django_shop has no migrations
    _database = database
    return database
