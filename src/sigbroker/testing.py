"""Helpers for your own tests: signals that go through the codec, without Redis.

Eager mode (``configure(eager=True)``) calls receivers exactly like
``django.dispatch``. :func:`in_memory` goes one step closer to production:
every send is encoded by the real client, "published" to an in-memory
stand-in for Redis, decoded by the real codec (so a payload that would fail
on the wire fails in the test, and receivers get what a worker would give
them: a sender reference, decoded values), recorded, and delivered to the
local receivers by the worker's own dispatcher::

    from sigbroker.testing import in_memory

    def test_registration_opens_an_account():
        with in_memory() as broker:
            register_user("ada")
        assert [m.signal for m in broker.sent] == ["accounts.signals.user_registered"]
        assert broker.stats.failed == 0

``Signal.send``, ``send_robust``, ``asend``, ``asend_robust``, and the
broker's own ``send``, ``batch()``, ``publish()`` and ``asend`` all work; none
of them opens a connection.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from . import config
from ._aio import EventLoopThread
from .client import Client, SignalRef
from .codec import Envelope
from .config import SecretSetting
from .dispatch import Dispatcher
from .errors import InvalidMessage
from .signal import Signal, all_signals
from .stats import Stats

__all__ = ["InMemoryBroker", "in_memory"]


class InMemoryBroker(Client):
    """A client whose Redis is this process: every message is recorded and delivered here.

    Sending is the real :class:`~sigbroker.client.Client`'s (validation,
    encoding, ``batch()``, ``publish()``); only the connection is replaced by
    an in-memory publisher. ``sent`` lists the decoded envelopes in order.
    With ``deliver=True`` each message reaches the receivers of this process
    at once, through the worker's dispatcher: failures are logged and counted
    in ``stats``, not raised, and bytes that are not a valid message are
    rejected and counted there, as a worker would. A send returns 1 when
    this process has a receiver for the signal (it acts as one worker), else 0.
    """

    def __init__(self, *, deliver: bool = True, secret: SecretSetting = None) -> None:
        # The URL is never connected to: every message goes to _MemoryPublisher.
        super().__init__("redis://in-memory.invalid:6379/0", secret=secret)
        self.deliver = deliver
        self.sent: list[Envelope] = []
        self.stats = Stats()
        self._loop = EventLoopThread()
        self._dispatcher = Dispatcher(self.codec, self.stats, self._loop)
        self._handlers: dict[Signal, Callable[[bytes], None]] = {}
        self._publisher = _MemoryPublisher(self)  # type: ignore[assignment]

    async def asend(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Same as :meth:`send`: the receivers have run when it returns."""
        return self.send(signal, sender, **kwargs)

    def _route(self, channel: str, data: bytes) -> list[Signal]:
        # Record one published message; return the local signals whose
        # receivers get it (several signals may share a name).
        with contextlib.suppress(InvalidMessage):
            self.sent.append(self.codec.decode(data))
        if not self.deliver or not channel.startswith(self._prefix):
            return []
        name = channel[len(self._prefix) :]
        return [s for s in all_signals() if s.name_or_none == name and s.has_remote_receivers()]

    def _dispatch(self, signal: Signal, data: bytes) -> None:
        handler = self._handlers.get(signal)
        if handler is None:
            handler = self._handlers[signal] = self._dispatcher.handler(signal)
        handler(data)

    def close(self) -> None:
        """Stop the loop that runs async receivers; safe to call twice."""
        self._loop.close()
        self._handlers.clear()
        super().close()


class _MemoryPublisher:
    """Stands in for the client's connection: PUBLISH commands are delivered in process.

    It has the interface of the client's publisher: ``frames`` holds
    ``count`` PUBLISH commands in Redis's protocol, one after the other.
    Messages are delivered one at a time, in the order they were published,
    as one worker takes them. A send returns once its messages are delivered,
    unless another thread is delivering at that moment: that thread then
    delivers them too before its own send returns. So a message sent by a
    receiver (sync or async) runs after that receiver's message is done, as
    in a worker, never inside it.
    """

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self._pending: collections.deque[tuple[list[Signal], bytes]] = collections.deque()
        self._lock = threading.Lock()  # guards _pending and the recording in ``sent``
        self._delivering = threading.Lock()  # held by the one thread delivering

    def publish(self, frames: bytes, count: int = 1, many: bool = False) -> Any:
        """Deliver ``count`` framed PUBLISH commands; return the count, or the list of counts."""
        commands = _publish_commands(frames, count)
        counts = []
        with self._lock:
            for _, channel, data in commands:
                targets = self._broker._route(channel.decode(), data)
                counts.append(1 if targets else 0)
                if targets:
                    self._pending.append((targets, data))
        self._deliver_pending()
        return counts if many else counts[0]

    def _deliver_pending(self) -> None:
        # Never waits for the thread that is delivering: that thread may be
        # waiting for this one (an async receiver that sends, on the loop's
        # thread). It looks for pending messages again after letting go.
        while self._pending and self._delivering.acquire(blocking=False):
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            break
                        targets, data = self._pending.popleft()
                    for signal in targets:
                        self._broker._dispatch(signal, data)
            finally:
                self._delivering.release()

    def close(self) -> None:
        """Nothing to close: there is no connection."""

    def _after_fork(self) -> None:
        """In a forked child: new locks, and nothing pending (the parent delivers its own)."""
        self._pending = collections.deque()
        self._lock = threading.Lock()
        self._delivering = threading.Lock()


_PUBLISH_HEAD = b"*3\r\n$7\r\nPUBLISH\r\n"


def _publish_commands(frames: bytes, count: int) -> list[tuple[bytes, bytes, bytes]]:
    """Split ``count`` PUBLISH commands, as the client frames them, into their parts.

    Only the client's own frames come here, so a small reader of that one
    shape does (and needs no hiredis).
    """
    commands = []
    at = 0
    for _ in range(count):
        if not frames.startswith(_PUBLISH_HEAD, at):
            raise ValueError(f"not a PUBLISH command: {frames[at : at + 40]!r}")
        at += len(_PUBLISH_HEAD)
        parts = []
        for _ in range(2):  # the channel, then the message: $<length>\r\n<bytes>\r\n
            end = frames.index(b"\r\n", at)
            size = int(frames[at + 1 : end])
            parts.append(frames[end + 2 : end + 2 + size])
            at = end + 2 + size + 2
        commands.append((b"PUBLISH", parts[0], parts[1]))
    if at != len(frames):
        raise ValueError("bytes left after the PUBLISH commands")
    return commands


@contextlib.contextmanager
def in_memory(*, deliver: bool = True, secret: SecretSetting = None) -> Iterator[InMemoryBroker]:
    """Route ``Signal.send`` through an :class:`InMemoryBroker` for the block.

    Eager mode, when on, still wins: turn it off for code under this block.
    """
    broker = InMemoryBroker(deliver=deliver, secret=secret)
    previous = config.swap_default_client(broker)
    try:
        yield broker
    finally:
        config.swap_default_client(previous)
        broker.close()
