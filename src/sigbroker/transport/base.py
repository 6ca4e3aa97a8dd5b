"""The interface between sigbroker and what carries its messages.

A :class:`Transport` publishes encoded messages (one, or many in one round
trip) and makes :class:`Source` objects; a source delivers the encoded
messages of some channels to their handlers until it is stopped, and
acknowledges each one when the transport needs it (pub/sub does not; a
durable stream does). The client and the worker speak only to this
interface, so a delivery mode is one module next to this one:
``redis_pubsub`` (Redis PUBLISH/SUBSCRIBE) and ``memory`` (this process).

A handler is the dispatcher's per-channel function: it takes the encoded
message and, when the source needs to know when the message is finished, a
``done`` callback that it calls once, in whatever thread finished it, with
the message's :class:`Outcome`. It returns the outcome when the message
finished in the calling thread, and ``None`` when it was handed to a pool.

Everything a transport keeps (sockets, locks, queues) must be reset in a
forked child: :func:`reset_after_fork` registers an object whose
``_after_fork()`` the child calls once, before ``fork()`` returns there.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..stats import Stats

__all__ = [
    "ABANDON_COUNT_LIMIT",
    "Done",
    "Handler",
    "Outcome",
    "PatternHandler",
    "Source",
    "Transport",
    "reset_after_fork",
]

logger = logging.getLogger(__name__)

#: Most received messages a source counts (not delivers) when a stop is abandoned.
ABANDON_COUNT_LIMIT = 100_000


class Outcome(enum.Enum):
    """What became of one message handed to a dispatcher."""

    #: Every receiver returned.
    PROCESSED = "processed"
    #: The receivers ran and at least one raised (logged and counted).
    FAILED = "failed"
    #: No receiver ran: the message was invalid, badly signed or a replay (counted).
    REJECTED = "rejected"


#: Called once with the outcome of a message, in the thread that finished it.
Done = Callable[[Outcome], None]


class Handler(Protocol):
    """The function a source calls with each message of one channel."""

    def __call__(self, data: bytes, done: Done | None = None, /) -> Outcome | None:
        """Handle ``data``; return its outcome, or None if it was handed to a pool."""


#: Called with the channel and the message of a pattern subscription (``listen``).
PatternHandler = Callable[[bytes, bytes], None]


class Source(ABC):
    """The messages of some channels, delivered to their handlers until stopped.

    :meth:`run` blocks in the thread that reads; the other methods are called
    from other threads (the worker's supervisor and pulse) and only set
    flags or count, so they are safe in a signal handler.
    """

    #: Set while the source is receiving (subscribed, connected).
    ready: threading.Event

    @abstractmethod
    def run(self) -> None:
        """Deliver messages until :meth:`stop`, :meth:`drain` or :meth:`abandon` ends it."""

    @abstractmethod
    def stop(self) -> None:
        """Stop at once; whatever was received and not delivered yet is dropped."""

    @abstractmethod
    def drain(self) -> None:
        """Stop warmly: take no new messages, deliver those already on their way, return."""

    @abstractmethod
    def abandon(self) -> int:
        """Stop at once; return how many received messages will not be delivered."""

    def pulse(self) -> None:  # noqa: B027 - a hook: most sources need none
        """Check that the source still receives (called every few seconds)."""

    def ack(self, token: Any, outcome: Outcome) -> None:  # noqa: B027 - see above
        """Acknowledge the message ``token`` once it finished (for transports that need it)."""


class Transport(ABC):
    """Publishes encoded messages on channels and makes sources that read them.

    A transport also keeps the worker's few keys (heartbeats) and answers the
    operator's questions (``ping``, live channels). Thread-safe; fork-safe.
    """

    #: What names this transport in logs: a URL with its secrets masked.
    display: str
    #: Where messages published here are seen: sequence numbers count per server.
    server: str

    @abstractmethod
    def publish(self, channel: str, data: bytes) -> int:
        """Publish one message; return how many subscribers received it."""

    @abstractmethod
    def publish_many(self, messages: Sequence[tuple[str, bytes]]) -> list[int]:
        """Publish messages in one round trip; return each one's subscriber count.

        Raises :class:`~sigbroker.errors.BatchRefused` if some were refused
        and the others delivered.
        """

    @abstractmethod
    async def apublish(self, channel: str, data: bytes) -> int:
        """Publish one message from an event loop; return the subscriber count."""

    @abstractmethod
    def source(
        self,
        routes: Mapping[str, Handler],
        *,
        stats: Stats | None = None,
        probe: str | None = None,
        patterns: Sequence[str] = (),
        on_pattern: PatternHandler | None = None,
    ) -> Source:
        """A source of the messages of ``routes``' channels (and of ``patterns``).

        ``probe`` names a channel of the source's own that it may use to
        check that it still receives; ``stats`` gets its resubscriptions.
        """

    @abstractmethod
    def put(self, key: str, value: str, ttl_s: float) -> None:
        """Keep ``value`` under ``key`` for ``ttl_s`` seconds (a heartbeat)."""

    @abstractmethod
    def delete(self, key: str, *, once_within_s: float | None = None) -> None:
        """Remove ``key``; with ``once_within_s``, one attempt bounded by it, no retries."""

    @abstractmethod
    def values(self, pattern: str) -> list[bytes]:
        """The values of the keys that match the glob ``pattern``, in key order."""

    @abstractmethod
    def channels(self, pattern: str) -> dict[str, int]:
        """The live channels that match the glob ``pattern`` and their subscriber counts."""

    @abstractmethod
    def ping(self) -> None:
        """One round trip to the server; raises BrokerUnavailable if it fails."""

    def server_info(self) -> dict[str, Any]:
        """What the server says of itself (version, mode...); empty if nothing."""
        return {}

    def setting(self, name: str) -> str | None:
        """A server setting (Redis's ``CONFIG GET name``); None where there is none."""
        return None

    def scrub(self, text: str) -> str:
        """``text`` with every secret of this transport's address hidden."""
        return text

    @abstractmethod
    def close(self) -> None:
        """Close every connection; safe to call twice."""

    async def aclose(self) -> None:  # noqa: B027 - a hook: only asyncio connections need it
        """Close the connections of the running event loop; call before the loop ends."""


#: Objects whose state a forked child must replace (see reset_after_fork).
_RESET_IN_CHILD: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_after_fork(obj: Any) -> None:
    """Have a forked child call ``obj._after_fork()`` before ``fork()`` returns there.

    Once per fork rather than once per send: the send path pays nothing for
    fork safety. ``obj`` is held weakly.
    """
    _RESET_IN_CHILD.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_RESET_IN_CHILD):
        try:
            obj._after_fork()
        except Exception:  # one object's failure must not leave the others' parent state
            logger.exception("Could not reset %r after fork", obj)


if hasattr(os, "register_at_fork"):  # every platform that can fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
