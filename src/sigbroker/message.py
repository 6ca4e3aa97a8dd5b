"""Which message a worker's receivers are running: :func:`current_message`.

Receivers are called exactly as Django calls them, with no extra keyword
arguments; what they may need to know of the message itself (to be
idempotent under at-least-once delivery, say) is here instead. The
dispatcher sets it around each message's receivers, async ones included.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple

__all__ = ["Message", "current_message"]


class Message(NamedTuple):
    """The message whose receivers are running."""

    #: The message's id: the same on every delivery of it, and on a dead letter's replay.
    id: str
    #: The signal's name.
    signal: str
    #: The process that sent it (``host:pid:...``).
    origin: str
    #: When it was sent (seconds since the epoch, the sender's clock).
    sent_at: float
    #: How many times it was handed to this group's receivers (1 the first time; pub/sub: 1).
    deliveries: int = 1
    #: Its stream entry id (durable signals), else None.
    entry: str | None = None
    #: The consumer group that runs it (durable signals), else None.
    group: str | None = None


_current: ContextVar[Message | None] = ContextVar("sigbroker_current_message", default=None)


def current_message() -> Message | None:
    """The message whose receivers are running in this thread or task; None outside one.

    ::

        @receiver(order_paid)
        def charge(sender, order_id, **kwargs):
            message = sigbroker.current_message()
            if not Charge.objects.filter(message_id=message.id).exists():
                ...
    """
    return _current.get()
