"""Helpers for your own tests: signals that go through the codec, without Redis.

Eager mode (``configure(eager=True)``) calls receivers exactly like
``django.dispatch``. :func:`in_memory` goes one step closer to production:
every send is encoded by the real client, published on an in-memory
transport (:mod:`sigbroker.transport.memory`) instead of Redis, recorded,
and received by a real :class:`~sigbroker.broker.Worker` running in a thread
of the test process, which decodes it with the real codec (so a payload that
would fail on the wire fails in the test, and receivers get what a worker
would give them: a sender reference, decoded values) and calls the local
receivers through its dispatcher. A send returns once those receivers, and
those of every message they sent in turn, have run::

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

import contextlib
import threading
from collections.abc import Callable, Iterator

from . import config
from .broker import Worker
from .client import Client
from .codec import Envelope
from .config import SecretSetting
from .errors import InvalidMessage
from .signal import Signal, all_signals
from .stats import Stats
from .transport.base import Destination, reset_after_fork
from .transport.memory import MemoryTransport

__all__ = ["InMemoryBroker", "in_memory"]

#: Longest a test waits for the in-memory worker to start or stop.
WORKER_START_TIMEOUT_S = 10.0
#: The consumer group the in-memory worker runs durable signals in (each runs once).
IN_MEMORY_GROUP = "in-memory"


class InMemoryBroker(Client):
    """A client on an in-memory transport, with a worker of this process receiving.

    Sending is the real :class:`~sigbroker.client.Client`'s (validation,
    encoding, ``batch()``, ``publish()``, ``asend``). ``sent`` lists the
    decoded envelopes of everything published, in order. With
    ``deliver=True`` a real :class:`~sigbroker.broker.Worker` receives every
    signal that has a receiver in this process (it is restarted when a
    receiver of a new signal is connected): failures are logged and counted
    in ``stats``, not raised, and bytes that are not a valid message are
    rejected and counted there, as in production. A send returns 1 when this
    process has a receiver for the signal (it acts as one worker), else 0.
    """

    def __init__(self, *, deliver: bool = True, secret: SecretSetting = None) -> None:
        self.memory = _Transport(self)
        super().__init__("memory://", secret=secret, transport=self.memory)
        self.deliver = deliver
        self.stats = Stats()
        #: The decoded envelope of every message published, in order (bytes
        #: that do not decode are left out).
        self.sent: list[Envelope] = []
        self._worker: Worker | None = None
        self._receiving: frozenset[Signal] = frozenset()
        self._lock = threading.Lock()  # held while the worker is replaced
        self._held: list[tuple[str, bytes]] = []
        self._gate = threading.Condition()  # a worker's replacement waits for publishes
        self._publishing = 0
        self._replacing = False
        reset_after_fork(self)

    def _record(self, data: bytes) -> None:
        with contextlib.suppress(InvalidMessage):
            self.sent.append(self.codec.decode(data))

    def _publish(self, channel: str, data: bytes, publish: Callable[[str, bytes], int]) -> int:
        """Publish through ``publish`` once a worker receives every signal with receivers."""
        self._record(data)
        if threading.current_thread().name.startswith("sigbroker"):
            # A receiver's own send (or its event loop's): the worker that runs
            # it can not be replaced from here. A message for a signal whose
            # receivers it does not have yet waits for the send outside.
            if self.deliver and self._new_channel(channel):
                self._held.append((channel, data))
                return 1
            return publish(channel, data)
        self._follow_receivers()
        with self._gate:  # no worker is replaced while a message is on its way
            self._gate.wait_for(lambda: not self._replacing)
            self._publishing += 1
        try:
            count = publish(channel, data)
        finally:
            with self._gate:
                self._publishing -= 1
                self._gate.notify_all()
        while self._held:
            held, self._held = self._held, []
            self._follow_receivers()
            for late_channel, late_data in held:
                publish(late_channel, late_data)
        return count

    def _missing(self) -> frozenset[Signal]:
        # Signals with receivers that the worker does not receive yet.
        return frozenset(s for s in all_signals() if s.has_remote_receivers()) - self._receiving

    def _new_channel(self, channel: str) -> bool:
        return any(self.channel(s) == channel for s in self._missing())

    def _follow_receivers(self) -> None:
        """Have a worker receive every signal that has a receiver now (before a publish).

        The worker is replaced only when a signal got its first receivers:
        one that lost them stays received (its messages then reach no one),
        so that receivers collected by the garbage collector never cause a
        replacement while other threads send.
        """
        if not self.deliver or not self._missing():
            return
        with self._lock:
            missing = self._missing()
            if not missing:
                return
            with self._gate:
                self._replacing = True
                self._gate.wait_for(lambda: self._publishing == 0)
            try:
                self._stop_worker()
                wanted = self._receiving | missing
                worker = Worker(self, signals=wanted, group=IN_MEMORY_GROUP)
                worker.stats = self.stats
                worker.start()
                worker.wait_ready(WORKER_START_TIMEOUT_S)
                self._worker = worker
                self._receiving = wanted
            finally:
                with self._gate:
                    self._replacing = False
                    self._gate.notify_all()

    def _stop_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(WORKER_START_TIMEOUT_S)

    def close(self) -> None:
        """Stop the worker (after it ran what it received); safe to call twice."""
        with self._lock:
            self._stop_worker()
            self._receiving = frozenset()
        super().close()

    def _after_fork(self) -> None:
        """In a forked child: the parent's worker does not run here; a new lock."""
        self._lock = threading.Lock()
        self._gate = threading.Condition()
        self._publishing = 0
        self._replacing = False
        self._held = []
        self._worker = None
        self._receiving = frozenset()


class _Transport(MemoryTransport):
    """The memory transport of an :class:`InMemoryBroker`: it records, and starts the worker."""

    def __init__(self, broker: InMemoryBroker) -> None:
        super().__init__(record=True)  # the raw bytes too: tests look inside them
        self._broker = broker

    def publish(self, channel: Destination, data: bytes) -> int:
        key = channel if isinstance(channel, str) else channel.key  # a durable signal's stream
        return self._broker._publish(key, data, super().publish)


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
