"""What the ``sigbroker`` group hands its commands: the global options and ``-A``.

The group (in :mod:`sigbroker.cli`) parses the global options into an
:class:`Options` and stores it on the click context; a command receives it
with :data:`pass_options`. ``worker`` and ``inspect`` both take ``-A MODULE``
(:func:`app_option`) and import what it names with :func:`load_modules`.

A framework that runs the CLI inside its own process set-up (``python
manage.py sigbroker``, see :mod:`sigbroker.contrib.django`) passes a
:class:`Framework` to :func:`sigbroker.cli.main`: its ``discover`` finds the
receivers of the project's apps (so ``-A`` becomes optional) and its message
hooks run around each message of a worker.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..errors import ConfigurationError

__all__ = ["Framework", "Options", "app_option", "import_modules", "load_modules", "pass_options"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Framework:
    """What a framework that runs the CLI adds to it (``manage.py sigbroker``).

    ``discover`` imports the modules that define the project's signals and
    connect its receivers, and returns their names; ``before_message`` and
    ``after_message`` are a worker's per-message hooks (see
    :class:`~sigbroker.broker.Worker`).
    """

    name: str
    discover: Callable[[], list[str]]
    before_message: Callable[[], object] | None = None
    after_message: Callable[[], object] | None = None


@dataclass
class Options:
    """The global options, passed to every command through the click context."""

    url: str | None
    namespace: str | None
    secrets: tuple[bytes, ...] | None
    debug: bool
    framework: Framework | None = None

    def client(self) -> Any:
        """Build the client these options describe."""
        from ..client import Client  # deferred: ``--help`` does not import redis

        return Client(self.url, namespace=self.namespace, secret=self.secrets)


pass_options = click.make_pass_decorator(Options)


def app_option(help_text: str) -> Callable[[F], F]:
    """The ``-A MODULE`` option (repeatable) of ``worker`` and ``inspect``.

    Required unless a :class:`Framework` discovers the modules (checked by
    :func:`load_modules`, with click's wording and exit code 2).
    """
    return click.option("-A", "--app", "modules", multiple=True, metavar="MODULE", help=help_text)


def load_modules(opts: Options, modules: Iterable[str]) -> list[str]:
    """Import what the framework discovers, then the ``-A`` modules; return their names."""
    modules = list(modules)
    if opts.framework is None:
        if not modules:
            raise click.UsageError("Missing option '-A' / '--app'.")
        discovered = []
    else:
        discovered = opts.framework.discover()
    import_modules(modules)
    return discovered + [m for m in modules if m not in discovered]


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules named by ``-A``, with the current directory on sys.path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {name!r}: {exc}") from exc
