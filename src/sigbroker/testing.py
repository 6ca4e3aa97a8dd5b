"""Helpers for your own tests: signals that go through the codec, without Redis.

Eager mode (``configure(eager=True)``) calls receivers exactly like
``django.dispatch``. :func:`in_memory` goes one step closer to production:
every ``Signal.send`` is encoded and decoded by the real codec (so a payload
that would fail on the wire fails in the test, and receivers get what a
worker would give them: a sender reference, decoded values), recorded, and
delivered to the local receivers with the worker's semantics::

    from sigbroker.testing import in_memory

    def test_registration_opens_an_account():
        with in_memory() as broker:
            register_user("ada")
        assert [m.signal for m in broker.sent] == ["accounts.signals.user_registered"]
        assert broker.stats.failed == 0
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from . import config
from .client import Client, SignalRef
from .codec import Envelope
from .config import SecretSetting
from .dispatch import Dispatcher, EventLoopThread, Stats
from .signal import Signal, all_signals

__all__ = ["InMemoryBroker", "in_memory"]


class InMemoryBroker(Client):
    """A client that records every send and hands it to the local receivers.

    ``sent`` lists the decoded envelopes in order. With ``deliver=True`` the
    receivers of this process run at once, as a worker would run them:
    failures are logged and counted in ``stats``, not raised. ``send``
    returns 1 when some receiver could get the message, else 0.
    """

    def __init__(self, *, deliver: bool = True, secret: SecretSetting = None) -> None:
        # The URL is never connected to: nothing here talks to Redis.
        super().__init__("redis://in-memory.invalid:6379/0", secret=secret)
        self.deliver = deliver
        self.sent: list[Envelope] = []
        self.stats = Stats()
        self._loop = EventLoopThread()
        self._dispatcher = Dispatcher(self.codec, self.stats, self._loop)

    def send(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Encode, decode, record and (optionally) deliver one message."""
        data = self.encode(signal, sender, kwargs)
        envelope = self.codec.decode(data)
        self.sent.append(envelope)
        target = signal if isinstance(signal, Signal) else _find(envelope.signal)
        if not self.deliver or target is None or not target.has_remote_receivers():
            return 0
        self._dispatcher.handler(target)(data)
        return 1

    async def asend(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Same as :meth:`send` (receivers run before it returns)."""
        return self.send(signal, sender, **kwargs)

    def close(self) -> None:
        """Stop the loop that runs async receivers."""
        self._loop.close()
        super().close()


def _find(name: str) -> Signal | None:
    for signal in all_signals():
        if signal.name_or_none == name:
            return signal
    return None


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
