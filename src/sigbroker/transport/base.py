"""The interface between sigbroker and what carries its messages.

A :class:`Transport` publishes encoded messages (one, or many in one round
trip) and makes :class:`Source` objects; a source delivers the encoded
messages of some channels to their handlers until it is stopped, and
acknowledges each one when the transport needs it (pub/sub does not; a
durable stream does). The client and the worker speak only to this
interface, so a delivery mode is one module next to this one:
``redis_pubsub`` (Redis PUBLISH/SUBSCRIBE), ``redis_streams`` (durable
delivery on consumer groups) and ``memory`` (this process). A message goes
to a channel (a ``str``: broadcast) or to a :class:`Stream` (durable).

A durable source hands each message to a :class:`DurableHandler` with its
:class:`Delivery`: which receivers already succeeded (never run again), and
where the dispatcher notes which receivers raised, so that only those are
retried.

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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from ..durable import ConsumerOptions
from ..stats import Stats

__all__ = [
    "ABANDON_COUNT_LIMIT",
    "BatchSink",
    "Combined",
    "Delivery",
    "Destination",
    "Done",
    "DurableBatch",
    "DurableDone",
    "DurableHandler",
    "DurableRoute",
    "Handler",
    "Outcome",
    "PatternHandler",
    "Source",
    "Stream",
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


class Stream(NamedTuple):
    """A durable destination: the key of a stream and about how many entries it keeps."""

    key: str
    maxlen: int


#: Where a message goes: a pub/sub channel, or a stream.
Destination = str | Stream


class Delivery:
    """One delivery of a durable message to a dispatcher, and what became of it.

    The source fills the first fields; the dispatcher runs every receiver of
    the message except those named in ``skip`` (they succeeded on an earlier
    delivery), or only the one named ``only`` (a dead letter replayed), and
    notes in ``failures`` each receiver that raised (its name: the error's
    line and its traceback) and in ``succeeded`` each one that returned.
    """

    __slots__ = ("data", "deliveries", "entry", "failures", "only", "skip", "stream", "succeeded")

    def __init__(
        self,
        stream: str,
        entry: str,
        data: bytes,
        deliveries: int = 1,
        skip: frozenset[str] = frozenset(),
        only: str | None = None,
    ) -> None:
        self.stream = stream
        self.entry = entry
        self.data = data
        self.deliveries = deliveries
        self.skip = skip
        self.only = only
        self.failures: dict[str, tuple[str, str]] = {}
        self.succeeded: list[str] = []

    def __repr__(self) -> str:
        return f"<Delivery {self.stream} {self.entry} #{self.deliveries}>"


#: Called once with a durable message handed to a pool and its outcome, in the pool's thread.
DurableDone = Callable[[Delivery, Outcome], None]


class DurableHandler(Protocol):
    """The function a durable source calls with each message of one stream."""

    def __call__(self, delivery: Delivery, done: DurableDone, /) -> Outcome | None:
        """Run ``delivery``: return its outcome, or None and call ``done`` later (a pool)."""


class BatchSink(Protocol):
    """Where a :class:`DurableBatch` reports: the source that read the batch."""

    #: Set when the source stops: the batch returns before its next message.
    stopping: bool

    def failed(self, stream: bytes, entry: bytes, delivery: Delivery) -> None:
        """Some receivers of this message raised (noted in ``delivery``)."""

    def unusual(self, stream: bytes, entry: bytes, fields: list[bytes]) -> None:
        """An entry that is not one plain message (a replay, a deleted entry)."""


class DurableBatch(Protocol):
    """Runs a batch of first deliveries of one stream in the calling thread: the lean path.

    Each message whose receivers all returned (or that was rejected) is
    appended to ``acks``; the others go to ``sink``. Returns how many of
    ``entries`` it handled: fewer when ``sink.stopping`` was set.
    """

    def __call__(
        self, stream: bytes, entries: list[Any], acks: deque[bytes], sink: BatchSink, /
    ) -> int:
        """Handle ``entries`` (``(entry id, fields)`` pairs) in order."""


class DurableRoute(NamedTuple):
    """How a durable source hands over one stream's messages."""

    #: One delivery at a time (retries, claims, replays; a worker with a pool or hooks).
    handle: DurableHandler
    #: A batch of first deliveries at once, where the worker allows it.
    batch: DurableBatch | None = None


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


class Combined(Source):
    """Several sources as one (a worker's pub/sub and durable signals).

    :meth:`run` runs each on a thread of its own and returns when all
    ended; it is ready while every one is.
    """

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = list(sources)
        self.ready = threading.Event()
        self._error: BaseException | None = None

    def run(self) -> None:
        """Run every source; raise the first error one of them raised."""
        threads = [
            threading.Thread(target=self._run, args=(s,), name="sigbroker-reader", daemon=True)
            for s in self.sources
        ]
        for thread in threads:
            thread.start()
        while alive := [t for t in threads if t.is_alive()]:
            if all(s.ready.is_set() for s in self.sources):
                self.ready.set()
            else:
                self.ready.clear()
            alive[0].join(0.05)
        self.ready.clear()
        if self._error is not None:
            raise self._error

    def _run(self, source: Source) -> None:
        try:
            source.run()
        except BaseException as exc:  # the others stop too; run() raises it
            if self._error is None:
                self._error = exc
            for other in self.sources:
                other.stop()

    def stop(self) -> None:
        """Stop every source at once."""
        for source in self.sources:
            source.stop()

    def drain(self) -> None:
        """Stop every source warmly."""
        for source in self.sources:
            source.drain()

    def abandon(self) -> int:
        """Abandon every source; the sum of what they will not deliver."""
        return sum(source.abandon() for source in self.sources)

    def pulse(self) -> None:
        """Pulse every source; one that can not reach its server does not stop the others."""
        failed: BaseException | None = None
        for source in self.sources:
            try:
                source.pulse()
            except Exception as exc:
                failed = exc
        if failed is not None:
            raise failed


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
    def publish(self, channel: Destination, data: bytes) -> int:
        """Publish one message; return how many subscribers (stream: groups) will get it."""

    @abstractmethod
    def publish_many(self, messages: Sequence[tuple[Destination, bytes]]) -> list[int]:
        """Publish messages in one round trip; return each one's count.

        Raises :class:`~sigbroker.errors.BatchRefused` if some were refused
        and the others delivered.
        """

    @abstractmethod
    async def apublish(self, channel: Destination, data: bytes) -> int:
        """Publish one message from an event loop; return its count."""

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

    def stream_source(
        self,
        routes: Mapping[str, DurableRoute],
        *,
        options: ConsumerOptions,
        consumer: str,
        namespace: str,
        alive_key: Callable[[str], str],
        stats: Stats,
    ) -> Source:
        """A source of the streams of ``routes``, read as ``consumer`` of ``options.group``.

        ``alive_key`` names the key whose presence says that a consumer (a
        worker) is alive; ``namespace`` places the group's dead letters.
        """
        raise NotImplementedError(f"{self.display} has no durable delivery")

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
