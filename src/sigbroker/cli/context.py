"""What the ``sigbroker`` group hands its commands: the global options and ``-A``.

The group (in :mod:`sigbroker.cli`) parses the global options into an
:class:`Options` and stores it on the click context; a command receives it
with :data:`pass_options`. ``worker`` and ``inspect`` both take ``-A MODULE``
(:func:`app_option`) and import what it names with :func:`import_modules`.
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

__all__ = ["Options", "app_option", "import_modules", "pass_options"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Options:
    """The global options, passed to every command through the click context."""

    url: str | None
    namespace: str | None
    secrets: tuple[bytes, ...] | None
    debug: bool

    def client(self) -> Any:
        """Build the client these options describe."""
        from ..client import Client  # deferred: ``--help`` does not import redis

        return Client(self.url, namespace=self.namespace, secret=self.secrets)


pass_options = click.make_pass_decorator(Options)


def app_option(help_text: str) -> Callable[[F], F]:
    """The ``-A MODULE`` option (repeatable, required) of ``worker`` and ``inspect``."""
    return click.option(
        "-A", "--app", "modules", multiple=True, required=True, metavar="MODULE", help=help_text
    )


def import_modules(modules: Iterable[str]) -> None:
    """Import the modules named by ``-A``, with the current directory on sys.path."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import {name!r}: {exc}") from exc
