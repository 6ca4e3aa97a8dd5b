"""Autodiscovery: import the ``signals`` and ``receivers`` modules of every installed app.

As Celery's ``autodiscover_tasks`` does for ``tasks``: the app's configuration
calls :func:`autodiscover` from ``ready()``, so that the receivers are
connected in every process of the project (a worker, and an eager test run
alike), and ``manage.py sigbroker worker`` needs no ``-A``. A module that
does not exist is skipped; one that exists and fails to import raises, with
its own traceback: a typo in a receivers module must not silently leave a
worker without receivers.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

__all__ = ["AUTODISCOVER_MODULES", "autodiscover"]

#: The modules of each installed app that are imported, when they exist.
AUTODISCOVER_MODULES = ("signals", "receivers")


def autodiscover(related: Iterable[str] = AUTODISCOVER_MODULES) -> list[str]:
    """Import ``<app>.<name>`` for every installed app and every name; return what was imported.

    Needs Django's app registry to be ready (call it from ``ready()`` or
    later). Importing a module a second time costs a dict lookup.
    """
    from django.apps import apps

    names = tuple(related)
    imported = []
    for config in apps.get_app_configs():
        if not hasattr(config.module, "__path__"):
            continue  # an app that is a single module has no submodules
        for name in names:
            module = f"{config.name}.{name}"
            # find_spec, not a caught ImportError: an ImportError raised
            # inside an existing module is the user's bug and must surface.
            if importlib.util.find_spec(module) is None:
                continue
            importlib.import_module(module)
            imported.append(module)
    return imported
