"""Which message a worker's receivers are running: :func:`current_message`.

Receivers are called exactly as Django calls them, with no extra keyword
arguments; what they may need to know of the message itself (to be
idempotent under at-least-once delivery, say) is here instead. The
dispatcher sets it around each message's receivers, async ones included.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import NamedTuple

__all__ = ["Message", "MessageFields", "current_message"]


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


#: A Message's fields as a plain tuple: what the dispatcher builds per message
#: (the entry id may still be the bytes Redis sent).
MessageFields = tuple[str, str, str, float, int, str | bytes | None, str | None]

#: The message of the sync receivers running in this thread (set per message: a
#: thread-local store is the cheapest), as a plain tuple of Message's fields.
running = threading.local()
#: The message of the async receivers running in this task (their own context).
current_async: ContextVar[Message | None] = ContextVar("sigbroker_message", default=None)


def current_message() -> Message | None:
    """The message whose receivers are running in this thread or task; None outside one.

    ::

        @receiver(order_paid)
        def charge(sender, order_id, **kwargs):
            message = sigbroker.current_message()
            if not Charge.objects.filter(message_id=message.id).exists():
                ...
    """
    message = current_async.get()
    if message is not None:
        return message
    fields = getattr(running, "message", None)
    if fields is None:
        return None
    entry = fields[5]
    if isinstance(entry, bytes):
        fields = (*fields[:5], entry.decode(), fields[6])
    return Message._make(fields)
