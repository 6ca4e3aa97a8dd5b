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
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from threading import get_ident
from typing import Any

from .codec import Codec
from .errors import ConfigurationError, InvalidMessage
from .signal import Signal

__all__ = ["Dispatcher", "EventLoopThread", "Sequences", "Stats", "Submit", "Throttle"]

#: How a worker runs receivers elsewhere: it is given a function that calls them.
Submit = Callable[[Callable[[], None]], None]

#: With a secret, messages sent longer ago than this (or as far ahead) are replays.
REPLAY_WINDOW_S = 300.0
#: Time a gap in an origin's sequence stays open for late arrivals before it counts as lost.
SETTLE_S = 1.0
#: Shortest interval between two log lines about rejected or lost messages of one kind.
LOG_INTERVAL_S = 10.0
#: Origins whose sequence a worker follows per signal; the older half is forgotten past it.
MAX_ORIGINS = 10_000
#: Ids of signed version-1 messages (which have no sequence) remembered against replays.
MAX_SEEN_IDS = 100_000

_now = time.time

logger = logging.getLogger(__name__)


@dataclass
class Stats:
    """What a worker has done so far; read by heartbeats and ``sigbroker workers``.

    ``processed`` counts messages decoded and dispatched, ``failed`` counts
    receiver calls that raised, ``rejected`` counts messages refused before
    any receiver ran, by reason in ``rejected_by`` (``invalid``: not a
    message the decoder accepts; ``signature``: unsigned or badly signed;
    ``replay``: already seen from its origin, or older than the replay
    window), ``lost`` counts messages that a sender published and this
    worker never received (gaps in an origin's sequence numbers), and
    ``resubscribes`` counts subscriptions after the first.
    """

    processed: int = 0
    failed: int = 0
    rejected: int = 0
    lost: int = 0
    resubscribes: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def reject(self, reason: str) -> None:
        """Count one rejected message under ``reason``."""
        with self.lock:
            self.rejected += 1
            self.rejected_by[reason] = self.rejected_by.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict (for heartbeats and JSON output)."""
        with self.lock:
            return {
                "processed": self.processed,
                "failed": self.failed,
                "rejected": self.rejected,
                "rejected_by": dict(self.rejected_by),
                "lost": self.lost,
                "resubscribes": self.resubscribes,
            }


class Throttle:
    """Log lines that input can trigger, at most one per key per interval.

    The first line of a key is logged at once; the ones that follow within
    ``interval_s`` are only counted, and the count is logged with the next
    line of that key or by :meth:`flush`. A flood of bad messages thus costs
    a few lines per interval, never one per message (STYLE 13).
    """

    def __init__(
        self,
        log: logging.Logger,
        interval_s: float = LOG_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> [time of the last line logged, lines suppressed since, the last text]
        self._keys: dict[str, list[Any]] = {}

    def warning(self, key: str, text: str) -> None:
        """Log ``text`` unless a line of ``key`` was logged within the interval."""
        now = self._clock()
        with self._lock:
            entry = self._keys.get(key)
            if entry is not None and now - entry[0] < self.interval_s:
                entry[1] += 1
                entry[2] = text
                return
            suppressed = entry[1] if entry is not None else 0
            self._keys[key] = [now, 0, text]
        if suppressed:
            text += f" ({suppressed} more like it in the last {self.interval_s:g}s)"
        self.log.warning("%s", text)

    def flush(self) -> None:
        """Log the count of lines suppressed in intervals that have ended."""
        now = self._clock()
        due = []
        with self._lock:
            for entry in self._keys.values():
                if entry[1] and now - entry[0] >= self.interval_s:
                    due.append((entry[1], entry[2]))
                    entry[0], entry[1] = now, 0
        for count, text in due:
            self.log.warning(
                "%d more like this in the last %gs; the latest: %s", count, self.interval_s, text
            )


class Sequences:
    """The sequence numbers of one channel's origins: counts what never arrived.

    Every sender numbers its messages per channel (1, 2, 3...). A number
    that follows the last one seen from its origin is the common case and
    costs one dict lookup. A jump opens a gap: its numbers are *pending* for
    ``settle_s`` (threads of one sender may publish a little out of order),
    then counted as lost with one (rate-limited) log line naming the count
    and the likely cause. A number at or below the last one seen that is not
    pending was seen before: a replay. Called from one reading thread; only
    the unusual paths take the lock, which :meth:`settle` shares.
    """

    def __init__(
        self,
        signal: str,
        stats: Stats,
        throttle: Throttle,
        *,
        settle_s: float = SETTLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signal = signal
        self.stats = stats
        self.throttle = throttle
        self.settle_s = settle_s
        self._clock = clock
        #: The highest sequence number seen from each origin.
        self.highest: dict[str, int] = {}
        # origin -> [first, last, noticed at] ranges of numbers not received yet
        self._pending: dict[str, list[list[Any]]] = {}
        # origin -> the worker's resubscription count when its last gap was checked
        self._resubscribes: dict[str, int] = {}
        self._lock = threading.Lock()

    def accept(self, origin: str, seq: int) -> bool:
        """Record ``seq`` from ``origin`` (not the next one); False for a message seen before."""
        with self._lock:
            last = self.highest.get(origin)
            if last is None:
                if len(self.highest) >= MAX_ORIGINS:
                    self._forget_oldest()
                self.highest[origin] = seq
                self._resubscribes[origin] = self.stats.resubscribes
                return True
            if seq > last:
                self.highest[origin] = seq
                if seq > last + 1:
                    self._pending.setdefault(origin, []).append([last + 1, seq - 1, self._clock()])
                return True
            return self._arrived_late(origin, seq)

    def _arrived_late(self, origin: str, seq: int) -> bool:
        ranges = self._pending.get(origin, [])
        for gap in ranges:
            first, last = gap[0], gap[1]
            if first <= seq <= last:
                if first == last:
                    ranges.remove(gap)
                elif seq == first:
                    gap[0] = seq + 1
                elif seq == last:
                    gap[1] = seq - 1
                else:  # split in two, both noticed when the whole gap was
                    gap[1] = seq - 1
                    ranges.append([seq + 1, last, gap[2]])
                return True
        return False

    def _forget_oldest(self) -> None:
        # Senders come and go (a web server replaces its processes): keep the
        # newer half. A forgotten origin that sends again starts afresh.
        for origin in list(self.highest)[: MAX_ORIGINS // 2]:
            del self.highest[origin]
            self._resubscribes.pop(origin, None)
            self._pending.pop(origin, None)

    def settle(self, *, everything: bool = False) -> int:
        """Count the gaps pending for longer than ``settle_s`` (all with ``everything``) as lost."""
        now = self._clock()
        found: list[tuple[str, int, str]] = []
        with self._lock:
            for origin, ranges in list(self._pending.items()):
                due = [g for g in ranges if everything or now - g[2] >= self.settle_s]
                if not due:
                    continue
                count = sum(g[1] - g[0] + 1 for g in due)
                ranges[:] = [g for g in ranges if g not in due]
                if not ranges:
                    del self._pending[origin]
                resubscribes = self.stats.resubscribes
                before = self._resubscribes.get(origin, resubscribes)
                self._resubscribes[origin] = resubscribes
                found.append((origin, count, _likely_cause(resubscribes > before)))
        total = 0
        for origin, count, cause in found:
            total += count
            noun = "message" if count == 1 else "messages"
            self.throttle.warning(
                f"lost:{self.signal}",
                f"Lost {count} {noun} of {self.signal} from {origin}: {cause}",
            )
        if total:
            with self.stats.lock:
                self.stats.lost += total
        return total


def _likely_cause(resubscribed: bool) -> str:
    if resubscribed:
        return (
            "the subscription was re-made meanwhile (a reconnect, or Redis cut this worker "
            "off at its client-output-buffer-limit for pubsub because it fell behind)"
        )
    return "no reconnect meanwhile, so most likely sends that failed at the sender"


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
    """Decode messages of known signals, check them, and call their local receivers.

    ``threads`` is how many threads may call the handlers at once: with more
    than one, the counters are updated under the stats lock. When the codec
    has a secret, a message sent more than ``max_age_s`` ago (or that far in
    the future: the clocks of senders and workers must agree within it), or
    one already seen from its origin, is rejected as a replay.
    """

    def __init__(
        self,
        codec: Codec,
        stats: Stats,
        loop: EventLoopThread,
        *,
        threads: int = 1,
        max_age_s: float = REPLAY_WINDOW_S,
    ) -> None:
        if not max_age_s > 0:
            raise ConfigurationError("max_age_s must be positive")
        self.codec = codec
        self.stats = stats
        self.loop = loop
        self.threads = threads
        self.max_age_s = max_age_s
        self.throttle = Throttle(logger)
        self._running: dict[int, tuple[str, str]] = {}
        self._sequences: list[Sequences] = []
        self._seen_ids: dict[str, float] = {}

    def in_flight(self) -> list[tuple[str, str]]:
        """``(signal name, message id)`` of each message whose receivers are running now."""
        return list(self._running.values())

    def settle(self, *, everything: bool = False) -> int:
        """Count as lost what has been missing long enough; log suppressed warnings.

        A worker calls it now and then (its pulse) and with ``everything``
        when it stops. Returns how many messages it counted as lost.
        """
        lost = sum(seqs.settle(everything=everything) for seqs in list(self._sequences))
        self.throttle.flush()
        return lost

    def handle(self, signal: Signal, data: bytes) -> None:
        """Dispatch one message that arrived on ``signal``'s channel; never raises."""
        self.handler(signal)(data)

    def handler(self, signal: Signal, submit: Submit | None = None) -> Callable[[bytes], None]:
        """The function that dispatches the messages of ``signal``'s channel.

        The returned function decodes and checks each message in the calling
        thread, in the order they arrive (sequence numbers are tracked
        there). With ``submit``, the receivers are not called there:
        ``submit`` is given a function without arguments that calls them (a
        thread pool's, say). It is the worker's per-message path, so
        everything that does not change between messages is looked up once,
        here.
        """
        read = self.codec.read
        name = signal.name
        receivers_for = signal.remote_receivers
        stats = self.stats
        lock = stats.lock if self.threads > 1 else None
        reject = self._reject
        run_async = self._run_async
        running = self._running
        sequences = Sequences(name, stats, self.throttle)
        self._sequences.append(sequences)
        highest = sequences.highest
        signed = self.codec.signed
        admit = self._admit

        def handle(data: bytes) -> None:
            try:
                signal_name, sender_ref, kwargs, message_id, sent_at, origin, seq = read(data)
            except InvalidMessage as exc:
                reject(name, exc.reason, str(exc))
                return
            if (
                seq
                and highest.get(origin) == seq - 1
                and signal_name == name
                and not signed
                and "signal" not in kwargs
                and "sender" not in kwargs
            ):
                highest[origin] = seq  # the common case: the next message of a known origin
            elif not admit(sequences, signal_name, kwargs, message_id, sent_at, origin, seq):
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

    def _admit(
        self,
        sequences: Sequences,
        signal_name: str,
        kwargs: dict[str, Any],
        message_id: str,
        sent_at: float,
        origin: str,
        seq: int,
    ) -> bool:
        """The checks of a message off the common path; reject it and return False if it fails."""
        name = sequences.signal
        if signal_name != name:
            self._reject(name, "invalid", f"a message for {signal_name!r} on this channel")
        elif "signal" in kwargs or "sender" in kwargs:
            self._reject(name, "invalid", "arguments named 'signal' or 'sender' are not allowed")
        elif self.codec.signed and abs(_now() - sent_at) > self.max_age_s:
            self._reject(name, "replay", f"message {message_id} is outside the replay window")
        elif not (sequences.accept(origin, seq) if seq else self._unsequenced(message_id, sent_at)):
            self._reject(name, "replay", f"message {message_id} was seen before")
        else:
            return True
        return False

    def _unsequenced(self, message_id: str, sent_at: float) -> bool:
        # A message of format version 1 has no sequence number: with a secret,
        # its id is remembered for the replay window instead. Only senders
        # that are not upgraded yet take this path.
        if not self.codec.signed:
            return True
        seen = self._seen_ids
        if message_id in seen:
            return False
        if len(seen) >= MAX_SEEN_IDS:
            horizon = _now() - self.max_age_s
            for old in [i for i, at in seen.items() if at < horizon] or list(seen)[::2]:
                del seen[old]
        seen[message_id] = sent_at
        return True

    def _reject(self, name: str, reason: str, detail: str) -> None:
        self.stats.reject(reason)
        self.throttle.warning(f"rejected:{reason}", f"Rejected a message on {name}: {detail}")

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
