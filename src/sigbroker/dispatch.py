"""The dispatcher: one encoded message in, the local receivers called.

Every message source of the worker (the pub/sub subscription today, a
durable stream later) hands its raw bytes to :meth:`Dispatcher.handle`, which
decodes and verifies them, finds the receivers in the local registry and calls
them with ``send_robust`` semantics: a receiver that raises is logged with its
traceback and counted, and the others still run. Nothing here talks to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any

from .codec import Codec
from .errors import InvalidMessage
from .signal import Signal

__all__ = ["Dispatcher", "EventLoopThread", "Stats", "Submit"]

#: How a worker runs receivers elsewhere: it is given a function that calls them.
Submit = Callable[[Callable[[], None]], None]

logger = logging.getLogger(__name__)


@dataclass
class Stats:
    """What a worker has done so far; read by heartbeats and ``sigbroker workers``.

    ``processed`` counts messages decoded and dispatched, ``failed`` counts
    receiver calls that raised, ``rejected`` counts messages the decoder
    refused, ``resubscribes`` counts subscriptions after the first (each one a
    possible gap in at-most-once delivery).
    """

    processed: int = 0
    failed: int = 0
    rejected: int = 0
    resubscribes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for heartbeats and JSON output)."""
        return {
            "processed": self.processed,
            "failed": self.failed,
            "rejected": self.rejected,
            "resubscribes": self.resubscribes,
        }


class EventLoopThread:
    """An asyncio loop in a daemon thread, where async receivers run.

    Started on first use, so a worker with only sync receivers never starts it.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the loop and wait for its result."""
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())
        return future.result()

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="sigbroker-async", daemon=True
                )
                self._thread.start()
            return self._loop

    def close(self) -> None:
        """Stop the loop and its thread; safe to call twice."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


def _qualname(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


class Dispatcher:
    """Decode messages of known signals and call their local receivers.

    ``threads`` is how many threads may call the handlers at once: with more
    than one, the counters are updated under the stats lock.
    """

    def __init__(
        self, codec: Codec, stats: Stats, loop: EventLoopThread, *, threads: int = 1
    ) -> None:
        self.codec = codec
        self.stats = stats
        self.loop = loop
        self.threads = threads
        self._running: dict[int, tuple[str, str]] = {}

    def handle(self, signal: Signal, data: bytes) -> None:
        """Dispatch one message that arrived on ``signal``'s channel; never raises."""
        self.handler(signal)(data)

    def in_flight(self) -> list[tuple[str, str]]:
        """``(signal name, message id)`` of each message whose receivers are running now."""
        return list(self._running.values())

    def handler(self, signal: Signal, submit: Submit | None = None) -> Callable[[bytes], None]:
        """The function that dispatches the messages of ``signal``'s channel.

        The returned function decodes and checks each message in the calling
        thread, in the order they arrive. With ``submit``, the receivers are
        not called there: ``submit`` is given a function without arguments
        that calls them (a thread pool's, say). It is the worker's per-message
        path, so everything that does not change between messages is looked
        up once, here.
        """
        read = self.codec.read
        name = signal.name
        receivers_for = signal.remote_receivers
        stats = self.stats
        lock = stats.lock if self.threads > 1 else None
        reject = self._reject
        run_async = self._run_async
        running = self._running

        def handle(data: bytes) -> None:
            try:
                signal_name, sender_ref, kwargs, message_id, _, _ = read(data)
            except InvalidMessage as exc:
                reject(name, exc)
                return
            if signal_name != name:
                reject(name, f"a message for {signal_name!r} on this channel")
                return
            if "signal" in kwargs or "sender" in kwargs:
                reject(name, "arguments named 'signal' or 'sender' are not allowed")
                return
            if submit is None:
                call(sender_ref, kwargs, message_id)
            else:
                submit(lambda: call(sender_ref, kwargs, message_id))

        def call(sender_ref: str | None, kwargs: dict[str, Any], message_id: str) -> None:
            me = get_ident()
            running[me] = (name, message_id)
            try:
                sender, sync_receivers, async_receivers = receivers_for(sender_ref)
                failed = 0
                for receiver in sync_receivers:
                    try:
                        receiver(signal=signal, sender=sender, **kwargs)
                    except Exception:
                        failed += 1
                        logger.exception(
                            "Error calling %s for %s (message %s)",
                            _qualname(receiver),
                            name,
                            message_id,
                        )
                if async_receivers:
                    failed += run_async(signal, sender, kwargs, async_receivers, message_id)
            finally:
                del running[me]
            if lock is None:
                stats.processed += 1
                stats.failed += failed
            else:
                with lock:
                    stats.processed += 1
                    stats.failed += failed

        return handle

    def _reject(self, name: str, reason: object) -> None:
        with self.stats.lock:
            self.stats.rejected += 1
        logger.warning("Rejected a message on %s: %s", name, reason)

    def _run_async(
        self,
        signal: Signal,
        sender: object,
        kwargs: dict[str, Any],
        receivers: list[Callable[..., Any]],
        message_id: str,
    ) -> int:
        async def call(receiver: Callable[..., Any]) -> Any:
            return await receiver(signal=signal, sender=sender, **kwargs)

        async def gather() -> list[Any]:
            return await asyncio.gather(*map(call, receivers), return_exceptions=True)

        failed = 0
        for receiver, result in zip(receivers, self.loop.run(gather()), strict=True):
            if isinstance(result, Exception):
                failed += 1
                logger.error(
                    "Error calling %s for %s (message %s)",
                    _qualname(receiver),
                    signal.name,
                    message_id,
                    exc_info=result,
                )
        return failed
