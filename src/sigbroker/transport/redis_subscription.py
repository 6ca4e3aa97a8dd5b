"""Reading Redis pub/sub: the subscription a worker (or ``listen``) receives through.

:class:`Subscription` reads its connection in one tight loop of its own (raw
socket reads parsed by hiredis when it is installed: ``make bench`` shows the
worker drains faster than redis-py's PubSub loop with it), reconnects with
capped exponential backoff and jitter, resubscribes, and drops a connection
whose probe did not come back (a half-open TCP connection looks healthy to
the kernel and to redis-py's ``health_check_interval``). Its warm stop
unsubscribes and delivers every message Redis sent before confirming.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from ..backoff import compute_backoff
from ..stats import Stats
from .base import ABANDON_COUNT_LIMIT, Handler, PatternHandler, Source
from .redis_endpoint import Endpoint, Replies

__all__ = ["StalledSubscription", "Subscription"]

logger = logging.getLogger(__name__)

#: Time a probe may take to come back before the subscription is declared dead.
PROBE_TIMEOUT_S = 5.0
#: Longest a blocking socket read waits before the loop checks its flags.
READ_TICK_S = 0.25
#: Longest Redis may stay silent while a stopping worker waits for it to confirm UNSUBSCRIBE.
UNSUBSCRIBE_TIMEOUT_S = 5.0
#: Longest an abandoning stop waits for the reader to leave the buffers it counts.
ABANDON_LOCK_S = 1.0


class StalledSubscription(Exception):
    """The subscription stopped delivering: a probe did not come back in time."""


class Subscription(Source):
    """A pub/sub subscription read in one tight loop, kept alive through failures.

    ``routes`` maps each channel to the function that handles its messages;
    ``publish`` sends the probes. The connection has the endpoint's options,
    so URLs, AUTH/ACL and TLS work exactly as for sending. ``run`` blocks
    until :meth:`stop`, :meth:`drain` or :meth:`abandon`.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        publish: Callable[[str, bytes], int],
        routes: Mapping[str, Handler],
        *,
        probe: str | None = None,
        patterns: Iterable[str] = (),
        on_pattern: PatternHandler | None = None,
        use_hiredis: bool,
        stats: Stats | None = None,
    ) -> None:
        self.endpoint = endpoint
        self._publish = publish
        self.routes: dict[bytes, Callable[[bytes], Any]] = {
            name.encode(): fn for name, fn in routes.items()
        }
        self.patterns = [p.encode() for p in patterns]
        self.on_pattern = on_pattern
        self.probe = probe.encode() if probe else None
        self.use_hiredis = use_hiredis
        self.stats = stats if stats is not None else Stats()
        self.ready = threading.Event()
        self._stopping = False
        self._draining = False
        # Held by the drain while it takes a reply from the buffers, and by
        # abandon() while it counts what is left in them.
        self._buffers_lock = threading.Lock()
        self._count_buffered: Callable[[], int] | None = None
        self._taken_not_dispatched = 0
        self._probe_token: bytes | None = None
        self._probe_sent_at = 0.0
        self._stalled = False
        self._unconfirmed = 0
        if self.probe is not None:
            self.routes[self.probe] = self._probe_returned

    # -- control from other threads ------------------------------------------

    def stop(self) -> None:
        """Stop reading at once; ``run`` returns after the message in hand is dispatched.

        Whatever is buffered is dropped: :meth:`drain` is the warm stop.
        """
        self._draining = False
        self._stopping = True

    def drain(self) -> None:
        """Stop warmly: unsubscribe, dispatch what arrives until Redis confirms, return.

        Every message that Redis sent before it processed the UNSUBSCRIBE was
        already on its way to this subscriber (in Redis's output buffer, the
        socket, the parser's buffer): ``run`` dispatches them all, then
        returns. It only sets flags, so it is safe in a signal handler; after
        :meth:`stop` or :meth:`abandon` it does nothing.
        """
        if not self._stopping:
            self._draining = True
            self._stopping = True

    def abandon(self) -> int:
        """Stop at once and return how many received messages will not be dispatched.

        Counts the replies the parser holds and what the socket holds now (at
        most :data:`ABANDON_COUNT_LIMIT`), without dispatching them. Meant for
        another thread while the reading one is stuck in a receiver: when that
        receiver returns, the reading thread dispatches nothing more.
        """
        self.stop()  # first: a draining reader leaves the buffers at its next reply
        locked = self._buffers_lock.acquire(timeout=ABANDON_LOCK_S)
        try:
            count = self._count_buffered
            if count is None:
                return self._taken_not_dispatched
            try:
                return self._taken_not_dispatched + count()
            except Exception as exc:  # a best-effort count on the way out: never fail it
                logger.debug("Could not count the buffered messages: %r", exc)
                return self._taken_not_dispatched
        finally:
            if locked:
                self._buffers_lock.release()

    def pulse(self) -> None:
        """Publish a probe that must come back through this subscription in time."""
        if self.probe is None or not self.ready.is_set():
            return
        token = uuid.uuid4().hex.encode()
        if self._probe_token is None:
            self._probe_token, self._probe_sent_at = token, time.monotonic()
        else:
            token = self._probe_token  # the previous probe is still out: resend it
        if self._publish(self.probe.decode(), token) == 0:
            # Redis does not know this subscription at all (it restarted behind a
            # connection that still looks open): no reason to wait for the deadline.
            self._stalled = True

    def _probe_returned(self, token: bytes) -> None:
        if token == self._probe_token:
            self._probe_token = None

    def _check_alive(self) -> None:
        if self._stalled or (
            self._probe_token is not None
            and time.monotonic() - self._probe_sent_at > PROBE_TIMEOUT_S
        ):
            raise StalledSubscription("the probe did not come back through the subscription")

    # -- the loop -------------------------------------------------------------

    def run(self) -> None:
        """Subscribe and read until stopped, reconnecting as often as needed."""
        attempt = 0
        first = True
        while not self._stopping:
            conn: Any = None
            try:
                conn = self._connect()
                if not first:
                    self.stats.resubscribes += 1
                    logger.warning(
                        "Resubscribed to %s (messages sent meanwhile are lost)",
                        self.endpoint.display,
                    )
                first, attempt = False, 0
                self._read(conn)
            except (redis.RedisError, OSError, StalledSubscription) as exc:
                self.ready.clear()
                if self._stopping:
                    if self._draining:
                        logger.warning(
                            "Subscription to %s lost while stopping (%s): "
                            "messages still on their way to this worker are lost",
                            self.endpoint.display,
                            self.endpoint.detail(exc),
                        )
                    break
                attempt += 1
                delay = compute_backoff(attempt)
                logger.warning(
                    "Subscription to %s lost (%s); reconnecting in %.2fs",
                    self.endpoint.display,
                    self.endpoint.detail(exc),
                    delay,
                )
                self._sleep(delay)
            finally:
                self.ready.clear()
                if conn is not None:
                    conn.disconnect()

    def _sleep(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, READ_TICK_S))

    def _connect(self) -> Any:
        # RESP2 on this connection whatever the pool speaks: messages then come
        # as plain arrays, the shape the tight loop tests for.
        conn = self.endpoint.connect()
        self._probe_token, self._stalled = None, False
        self._unconfirmed = len(self.routes) + len(self.patterns)
        if self.routes:
            conn.send_command("SUBSCRIBE", *self.routes)
        if self.patterns:
            conn.send_command("PSUBSCRIBE", *self.patterns)
        return conn

    def _read(self, conn: Any) -> None:
        # The tight loop: one fill() per burst of bytes, then every complete
        # reply in it; routes are looked up by channel as bytes.
        replies = Replies(conn, use_hiredis=self.use_hiredis, tick_s=READ_TICK_S)
        fill, gets = replies.fill, replies.gets
        routes, control = self.routes, self._control
        self._count_buffered = lambda: replies.count_buffered(_is_message, ABANDON_COUNT_LIMIT)
        while not self._stopping:
            if not fill():
                self._check_alive()
                continue
            reply = gets()
            while reply is not False:
                if type(reply) is list and reply[0] == b"message":
                    routes[reply[1]](reply[2])
                else:
                    control(reply)
                if self._stopping:
                    break
                reply = gets()
        if self._draining:
            self._drain(conn, replies.next)

    def _drain(self, conn: Any, next_reply: Callable[[], Any]) -> None:
        # The warm stop, outside the tight loop: UNSUBSCRIBE, then dispatch
        # every message that arrives before Redis confirms it (the last
        # confirmation says 0 subscriptions left; nothing comes after it).
        self.ready.clear()  # probes stop: they could not come back
        if self.routes:
            conn.send_command("UNSUBSCRIBE", check_health=False)
        if self.patterns:
            conn.send_command("PUNSUBSCRIBE", check_health=False)
        logger.debug("Unsubscribing from %s", self.endpoint.display)
        routes, on_pattern = self.routes, self.on_pattern
        dispatched = 0
        heard_at = time.monotonic()
        while (reply := self._drained_reply(next_reply)) is not None:
            if reply is _NOTHING:
                if time.monotonic() - heard_at > UNSUBSCRIBE_TIMEOUT_S:
                    raise redis.TimeoutError(
                        f"Redis did not confirm UNSUBSCRIBE within {UNSUBSCRIBE_TIMEOUT_S:g}s"
                    )
                continue
            heard_at = time.monotonic()
            if isinstance(reply, Exception):
                raise redis.ConnectionError(
                    f"Redis refused to unsubscribe: {self.endpoint.scrub(str(reply))}"
                )
            kind = reply[0]
            if kind == b"message":
                routes[reply[1]](reply[2])
                dispatched += 1
            elif kind == b"pmessage" and on_pattern is not None:
                on_pattern(reply[2], reply[3])
                dispatched += 1
            elif kind in (b"unsubscribe", b"punsubscribe") and reply[2] == 0:
                logger.info(
                    "Unsubscribed from %s; dispatched the %d messages that were on their way",
                    self.endpoint.display,
                    dispatched,
                )
                return

    def _drained_reply(self, next_reply: Callable[[], Any]) -> Any:
        # The next reply of the drain; _NOTHING when Redis sent nothing for a
        # tick; None once abandon() was called (it counts what is left, under
        # the same lock, and a reply taken meanwhile).
        with self._buffers_lock:
            if not self._draining:
                return None
            try:
                reply = next_reply()
            except TimeoutError:
                return _NOTHING
            if not self._draining:
                if type(reply) is list and reply[0] in (b"message", b"pmessage"):
                    self._taken_not_dispatched += 1
                return None
            return reply

    def _control(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise redis.ConnectionError(
                f"Redis refused the subscription: {self.endpoint.scrub(str(reply))}"
            )
        if type(reply) is not list or not reply:
            raise redis.ConnectionError(
                f"unexpected reply on the subscription: {self.endpoint.scrub(repr(reply)):.80}"
            )
        kind = reply[0]
        if kind == b"pmessage" and self.on_pattern is not None:
            self.on_pattern(reply[2], reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            self._unconfirmed -= 1
            if self._unconfirmed == 0:
                self.ready.set()
                logger.info(
                    "Subscribed to %d channels on %s",
                    len(self.routes) + len(self.patterns),
                    self.endpoint.display,
                )
        elif kind not in (b"unsubscribe", b"punsubscribe", b"pong"):
            raise redis.ConnectionError(f"unexpected reply on the subscription: {kind!r:.80}")


#: What the drain's reply function gives back when Redis sent nothing for a tick.
_NOTHING: Any = object()


def _is_message(reply: Any) -> bool:
    return type(reply) is list and bool(reply) and reply[0] in (b"message", b"pmessage")
