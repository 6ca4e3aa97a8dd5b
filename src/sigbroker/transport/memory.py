"""The in-process transport: the real client, worker and dispatcher without Redis.

Messages published on a :class:`MemoryTransport` go to the sources made by
the same transport object, in this process, in the order they were
published; each source delivers them on the thread that runs it (a
worker's reader), as a Redis subscription would. With ``wait=True`` (the
default) a publish returns once every source it reached is idle again: the
receivers of the message, and of every message they sent in turn, have run.
A publish made while a source is delivering (by a receiver, or on a
receiver's behalf by its event loop) does not wait for that source: it runs
after the message in hand, never inside it. It is what
:func:`sigbroker.testing.in_memory` runs on, and what users' tests may use.
"""

from __future__ import annotations

import collections
import fnmatch
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..durable import ConsumerOptions
from ..stats import Stats
from .base import (
    Delivery,
    Destination,
    Done,
    DurableHandler,
    DurableRoute,
    Handler,
    Outcome,
    PatternHandler,
    Source,
    Transport,
    reset_after_fork,
)

__all__ = ["MemorySource", "MemoryTransport"]

#: Longest a source's loop waits before it checks its stop flag.
TICK_S = 0.25


class MemorySource(Source):
    """The messages of some channels of a :class:`MemoryTransport`, delivered by :meth:`run`."""

    def __init__(
        self,
        transport: MemoryTransport,
        routes: Mapping[str, Handler],
        patterns: Sequence[str],
        on_pattern: PatternHandler | None,
    ) -> None:
        self.ready = threading.Event()
        self._transport = transport
        self.routes = dict(routes)
        self.patterns = list(patterns)
        self.on_pattern = on_pattern
        self._queue: collections.deque[tuple[str, bytes]] = collections.deque()
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._draining = False

    def accepts(self, channel: str) -> bool:
        """Whether a message on ``channel`` reaches this source."""
        return channel in self.routes or (
            self.on_pattern is not None
            and any(fnmatch.fnmatchcase(channel, p) for p in self.patterns)
        )

    def put(self, channel: str, data: bytes) -> None:
        """Queue one message for :meth:`run` to deliver."""
        with self._changed:
            self._queue.append((channel, data))
            self._changed.notify_all()

    def wait_idle(self) -> None:
        """Wait until nothing is queued or being delivered, unless a delivery is under way.

        A publish made during a delivery comes from the receivers (or their
        event loop), which the delivery waits for: waiting here would never end.
        """
        with self._changed:
            if self._busy:
                return
            self._changed.wait_for(
                lambda: not self.ready.is_set() or not (self._queue or self._busy)
            )

    def run(self) -> None:
        """Deliver queued messages until stopped (a drain delivers what is queued first)."""
        transport = self._transport
        transport._attach(self)
        self.ready.set()
        try:
            while True:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()
                    while not self._queue and not self._stopping:
                        self._changed.wait(TICK_S)
                    if not self._queue or (self._stopping and not self._draining):
                        return
                    channel, data = self._queue.popleft()
                    self._busy = True
                self._deliver(channel, data)
        finally:
            transport._detach(self)
            with self._changed:
                self.ready.clear()
                self._busy = False
                self._changed.notify_all()

    def _deliver(self, channel: str, data: bytes) -> None:
        route = self.routes.get(channel)
        if route is not None:
            route(data)
        elif self.on_pattern is not None:
            self.on_pattern(channel.encode(), data)

    def stop(self) -> None:
        """Stop at once; queued messages are dropped."""
        with self._changed:
            self._draining = False
            self._stopping = True
            self._queue.clear()
            self._changed.notify_all()

    def drain(self) -> None:
        """Take no new messages; deliver the queued ones, then let :meth:`run` return."""
        self._transport._detach(self)
        with self._changed:
            if not self._stopping:
                self._draining = True
                self._stopping = True
            self._changed.notify_all()

    def abandon(self) -> int:
        """Stop at once; return how many queued messages will not be delivered."""
        with self._changed:
            left = len(self._queue)
        self.stop()
        return left

    def _after_fork(self) -> None:
        self._changed = threading.Condition()
        self._queue = collections.deque()
        self._busy = False


class MemoryTransport(Transport):
    """Publish and subscribe within this process (see the module's docstring).

    ``sent`` records every published ``(channel, data)`` in order when
    ``record`` is true.
    """

    display = "memory://"
    server = "memory"

    def __init__(self, *, wait: bool = True, record: bool = False) -> None:
        self.wait = wait
        self.record = record
        self.sent: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._sources: list[MemorySource] = []
        self._keys: dict[str, tuple[str, float]] = {}
        reset_after_fork(self)

    def __repr__(self) -> str:
        return "<MemoryTransport>"

    def _attach(self, source: MemorySource) -> None:
        with self._lock:
            if source not in self._sources:
                self._sources.append(source)

    def _detach(self, source: MemorySource) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)

    def publish(self, channel: Destination, data: bytes) -> int:
        """Hand the message to every source of this transport that has its channel.

        A durable signal's stream is a channel like any other here.
        """
        if not isinstance(channel, str):
            channel = channel.key
        with self._lock:
            if self.record:
                self.sent.append((channel, data))
            targets = [s for s in self._sources if s.accepts(channel)]
        for source in targets:
            source.put(channel, data)
        if self.wait:
            for source in targets:
                source.wait_idle()
        return len(targets)

    def publish_many(self, messages: Sequence[tuple[Destination, bytes]]) -> list[int]:
        """Publish each message in turn; return their counts."""
        return [self.publish(channel, data) for channel, data in messages]

    async def apublish(self, channel: Destination, data: bytes) -> int:
        """Same as :meth:`publish`."""
        return self.publish(channel, data)

    def source(
        self,
        routes: Mapping[str, Handler],
        *,
        stats: Stats | None = None,
        probe: str | None = None,
        patterns: Sequence[str] = (),
        on_pattern: PatternHandler | None = None,
    ) -> MemorySource:
        """A source that receives from :meth:`run`'s start until it stops (no probe needed)."""
        return MemorySource(self, routes, patterns, on_pattern)

    def stream_source(
        self,
        routes: Mapping[str, DurableRoute],
        *,
        options: ConsumerOptions,
        consumer: str,
        namespace: str,
        alive_key: Callable[[str], str],
        stats: Stats,
    ) -> MemorySource:
        """Durable signals in this process: each message's receivers run once.

        There is no stream to keep messages, so no retries and no dead
        letters: a receiver that raises is logged and counted, as in pub/sub.
        """
        return MemorySource(self, {k: _once(k, r.handle) for k, r in routes.items()}, (), None)

    def put(self, key: str, value: str, ttl_s: float) -> None:
        """Keep ``value`` until ``ttl_s`` from now."""
        with self._lock:
            self._keys[key] = (value, time.monotonic() + ttl_s)

    def delete(self, key: str, *, once_within_s: float | None = None) -> None:
        """Forget ``key``."""
        with self._lock:
            self._keys.pop(key, None)

    def values(self, pattern: str) -> list[bytes]:
        """The unexpired values of the keys that match ``pattern``, in key order."""
        now = time.monotonic()
        with self._lock:
            return [
                value.encode()
                for key, (value, until) in sorted(self._keys.items())
                if until > now and fnmatch.fnmatchcase(key, pattern)
            ]

    def channels(self, pattern: str) -> dict[str, int]:
        """The channels that sources receive, with how many sources receive each."""
        counts: dict[str, int] = {}
        with self._lock:
            for source in self._sources:
                for channel in source.routes:
                    if fnmatch.fnmatchcase(channel, pattern):
                        counts[channel] = counts.get(channel, 0) + 1
        return dict(sorted(counts.items()))

    def ping(self) -> None:
        """Always reachable."""

    def server_info(self) -> dict[str, Any]:
        """What stands in for a server here."""
        return {"redis_version": "memory", "redis_mode": "in-process"}

    def close(self) -> None:
        """Nothing to close: there is no connection."""

    def _after_fork(self) -> None:
        """In a forked child: new locks; the parent's sources do not run here."""
        self._lock = threading.Lock()
        self._sources = []


def _once(stream: str, handler: DurableHandler) -> Handler:
    # A durable handler as a plain one: one delivery of each message.
    def handle(data: bytes, done: Done | None = None) -> Outcome | None:
        def finished(delivery: Delivery, outcome: Outcome) -> None:
            if done is not None:
                done(outcome)

        outcome = handler(Delivery(stream, "0-0", data), finished)
        if outcome is not None and done is not None:
            done(outcome)
        return outcome

    return handle
