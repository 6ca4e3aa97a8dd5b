"""Forwarding Django's own signals to other services: ``SIGBROKER_FORWARD``.

For each Django signal that the setting names (:func:`.settings.forwarded`),
the app's ``ready()`` connects one forwarding receiver (a strong reference,
``dispatch_uid`` ``"sigbroker.forward:<name>"``), for the listed models only
or, with ``"*"``, for every sender. It publishes the send on the mirror
signal of the same dotted name (:func:`.mirrors.remote_signal`) through
:meth:`~sigbroker.Signal.send_on_commit`: encoded at once, published when
the transaction of the database named by the signal's ``using`` argument
(else the default database) commits, dropped on rollback, published at once
outside a transaction.

The forwarded keyword arguments are the Django signal's, without ``signal``.
Two kinds of value are turned into references, since they mean nothing in
another process and would stop every send of the signal: a class (such as
``m2m_changed``'s ``model``) travels as its sender reference (a model as its
label), a queryset (``post_delete``'s ``origin`` after ``QuerySet.delete()``)
as its model's label.

A send that can not be forwarded never breaks the sender: a value the codec
refuses (an unsaved instance in ``pre_save``, an unregistered type), a sender
that is no class, string or None, or a publish that fails outside a
transaction is logged, at most one line per signal and kind every 10 s, and
that one message is skipped. In eager mode
the mirror's receivers run on commit and their exceptions propagate, as
from any eager send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.core.signals import setting_changed
from django.db import connections
from django.db.models import QuerySet

from ... import config
from ...errors import PayloadError
from ...naming import sender_reference
from ...signal import Signal
from ...throttle import Throttle
from .mirrors import remote_signal
from .settings import FORWARD, forwarded
from .transaction import send_on_commit

__all__ = ["connected", "install", "uninstall"]

logger = logging.getLogger(__name__)
_throttle = Throttle(logger)

#: ``(django signal, sender or None, dispatch_uid)`` of each forwarding receiver connected.
_connected: list[tuple[Any, Any, str]] = []


def _reference(value: object) -> object:
    if isinstance(value, type):
        return sender_reference(value)
    if isinstance(value, QuerySet):
        return sender_reference(value.model)
    return value


def _forward(mirror: Signal, sender: object, kwargs: dict[str, Any]) -> None:
    named = {key: _reference(value) for key, value in kwargs.items()}
    # A model signal's database; a third-party signal's "using" may mean something else.
    using = named.get("using")
    alias = using if isinstance(using, str) and using in connections else None
    try:
        send_on_commit(mirror, sender, named, using=alias)
    except PayloadError as exc:
        _throttle.warning(
            f"payload:{mirror.name}", f"Not forwarding a send of {mirror.name}: {exc}"
        )
    except Exception as exc:
        if config.is_eager():
            raise  # a local receiver's error, as from any eager send
        _throttle.warning(
            f"publish:{mirror.name}",
            f"Could not forward a send of {mirror.name}, the message is lost:"
            f" {type(exc).__name__}: {exc}",
        )


def _forwarder(name: str) -> Callable[..., None]:
    mirror = remote_signal(name)

    def forward(sender: object, signal: object = None, **kwargs: Any) -> None:
        _forward(mirror, sender, kwargs)

    forward.__qualname__ = forward.__name__ = f"forward[{name}]"
    return forward


def connected() -> list[tuple[Any, Any, str]]:
    """``(django signal, sender or None, dispatch_uid)`` of each forwarding receiver connected."""
    return list(_connected)


def uninstall() -> None:
    """Disconnect every forwarding receiver."""
    while _connected:
        signal, sender, uid = _connected.pop()
        signal.disconnect(sender=sender, dispatch_uid=uid)


def install(value: object = None) -> None:
    """Connect the forwarding receivers that ``SIGBROKER_FORWARD`` (or ``value``) asks for.

    Checks the whole setting first (a :class:`ConfigurationError` leaves the
    receivers as they were), then replaces the receivers connected before.
    """
    plan = forwarded(value)
    uninstall()
    for name, signal, senders in plan:
        forward = _forwarder(name)
        uid = f"sigbroker.forward:{name}"
        for sender in senders if senders is not None else (None,):
            signal.connect(forward, sender=sender, weak=False, dispatch_uid=uid)
            _connected.append((signal, sender, uid))
    setting_changed.connect(_setting_changed, dispatch_uid="sigbroker.contrib.django.forward")


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == FORWARD:
        install()
