"""``python manage.py sigbroker COMMAND ...``: the ``sigbroker`` CLI inside the project.

A thin wrapper, as django-rq's ``rqworker`` and Celery's ``celery -A proj``
are: everything after ``sigbroker`` goes to the click CLI unparsed (Django's
own option parsing is bypassed in :meth:`Command.run_from_argv`), so every
command and option of ``sigbroker`` works, and ``--help`` shows them. The
difference is the process around it: Django is set up with the project's
settings, the ``SIGBROKER_*`` settings are the defaults (``--url`` and the
other global options still win), and:

* ``worker`` and ``inspect`` import the ``signals`` and ``receivers``
  modules of every installed app (``-A`` adds more);
* a worker calls ``django.db.close_old_connections()`` before and after each
  message, in the thread that runs its receivers, as Celery's Django fixup
  does around each task: a connection that is past ``CONN_MAX_AGE`` or broke
  (a database restart, a failover) is closed and the next query opens a new
  one, so the worker outlives the database's restarts. Async receivers run on
  the worker's event loop thread, which these hooks do not tend: they should
  reach the ORM through ``sync_to_async``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from sigbroker.cli import main
from sigbroker.cli.context import Framework
from sigbroker.contrib.django.discovery import autodiscover

__all__ = ["Command", "django_framework"]


def django_framework() -> Framework:
    """What the CLI gets from Django: autodiscovery and the database connections' upkeep."""
    return Framework(
        name="Django",
        discover=autodiscover,
        before_message=close_old_connections,
        after_message=close_old_connections,
    )


def run(argv: Sequence[str], prog_name: str) -> None:
    """Run the ``sigbroker`` CLI on ``argv`` inside the project's settings; exits."""
    main(list(argv), prog_name=prog_name, framework=django_framework())


class Command(BaseCommand):  # type: ignore[misc]  # Django is untyped here
    """``manage.py sigbroker COMMAND ...``: every ``sigbroker`` command in the project."""

    help = (
        "Run a sigbroker command (worker, send, listen, workers, ...) inside this project; "
        "'manage.py sigbroker --help' lists them."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand everything after ``sigbroker`` to the click CLI, unparsed."""
        run(argv[2:], prog_name=f"{os.path.basename(argv[0])} {argv[1]}")

    def add_arguments(self, parser: Any) -> None:
        """For ``call_command("sigbroker", "worker", ...)``: keep every argument."""
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the CLI from ``call_command``: return on success, else raise CommandError."""
        try:
            run(args, prog_name="sigbroker")
        except SystemExit as exc:  # click ends every run with one
            if exc.code not in (0, None):
                raise CommandError(
                    f"sigbroker {' '.join(args)} failed", returncode=exc.code
                ) from None
