"""Sending after commit: what :meth:`sigbroker.Signal.send_on_commit` does.

A signal sent inside ``transaction.atomic()`` with plain ``send`` is
published at once, while the transaction is still open: a worker can receive
it and query the row before the row is committed (it sees nothing, or the old
version), and a rollback can not take the message back. ``send_on_commit``
checks and encodes the message at the call, so a bad payload raises
:class:`~sigbroker.errors.PayloadError` there and nothing is deferred, and
hands only the finished bytes to Django's ``transaction.on_commit`` (with
``robust=True``: a failed publish is logged and the project's other
callbacks still run). On rollback Django drops the callback and nothing is
published. Outside a transaction (autocommit) it publishes at once and
returns the receiver count; inside one it returns None.

A message published at commit carries no sequence number (sequence 0): a
rolled-back one would otherwise leave a gap that workers count as lost, and
messages published at commit leave in commit order, not call order. So
workers do not count the losses of these messages. Its send time is the
call's: with a secret, a transaction that stays open longer than the
workers' ``--max-age`` (300 s) gets its messages rejected as replays.

Like Celery's ``delay_on_commit``, it follows the default database's
transaction (forwarding, :mod:`.forward`, follows the database that the
Django signal names in its ``using`` argument). This module imports Django
and the client: it is imported by the first ``send_on_commit``, never by
:mod:`sigbroker.signal` at load time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ... import config
from ...client import Client
from ...codec import new_envelope
from ...errors import ConfigurationError
from ...naming import sender_reference

__all__ = ["send_on_commit"]

logger = logging.getLogger(__name__)


def _django_transaction() -> Any:
    try:
        from django.db import transaction
    except ImportError:
        raise ConfigurationError(
            "send_on_commit needs Django: pip install 'sigbroker[django]'"
        ) from None
    return transaction


def send_on_commit(
    signal: Any, sender: object, named: dict[str, Any], *, using: str | None = None
) -> Any:
    """Check and encode now, publish when the transaction of database ``using`` commits.

    ``using`` is a database alias; None is the default database.
    ``signal`` is a :class:`~sigbroker.Signal` (typed ``Any``: this module
    must not import :mod:`sigbroker.signal`, which imports it). Returns what
    ``send`` returns when there is no transaction to wait for, else None.
    In eager mode the payload is checked against ``providing_args`` and the
    local receivers run on commit, as ``send`` would run them.
    """
    transaction = _django_transaction()
    signal.validate(named)
    if config.is_eager():
        # A receiver's exception propagates out of the commit, as from an eager send.
        def send() -> Any:
            return signal.send(sender, **named)

        if _autocommit(transaction, using):
            return send()
        return _defer(transaction, send, using=using, robust=False)
    client = config.default_client(Client)
    if _autocommit(transaction, using):
        return client.send(signal, sender, **named)  # a plain send, with its sequence number
    name = signal.name
    data = client.codec.encode(new_envelope(name, sender_reference(sender), named))
    destination = client.destination(signal)  # a durable signal's stream, else its channel

    def publish() -> None:
        try:
            client.publish(destination, data)
        except Exception:
            logger.exception("Could not publish %s after commit: the message is lost", name)

    return _defer(transaction, publish, using=using, robust=True)


def _autocommit(transaction: Any, using: str | None) -> bool:
    # No transaction to wait for: Django's on_commit would run the callback at
    # once but return nothing, so the caller runs it to hand back its result.
    # (In manual transaction management, on_commit raises, as it should.)
    connection = transaction.get_connection(using)
    return not connection.in_atomic_block and bool(connection.get_autocommit())


def _defer(
    transaction: Any, func: Callable[[], object], *, using: str | None, robust: bool
) -> None:
    transaction.on_commit(func, using=using, robust=robust)
