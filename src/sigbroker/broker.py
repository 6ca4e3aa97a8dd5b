"""The worker: subscribe to the signals that have receivers and dispatch what arrives.

A :class:`Worker` is built from parts with one job each:

* :class:`Subscription` reads the pub/sub connection in one tight loop of its
  own (raw socket reads parsed by hiredis when it is installed), reconnects
  with capped exponential backoff and jitter, resubscribes, and drops a
  connection whose probe did not come back (a half-open TCP connection looks
  healthy to the kernel and to redis-py's ``health_check_interval``).
* :class:`~sigbroker.dispatch.Dispatcher` decodes, verifies and calls receivers.
* A pulse thread writes the heartbeat key and publishes the probe.

The library never installs OS signal handlers: ``sigbroker worker`` does, and
calls :meth:`Worker.stop` on the first SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from ._aio import EventLoopThread
from .client import Client, mask_url, resp2_connection
from .dispatch import REPLAY_WINDOW_S, Dispatcher
from .errors import BrokerUnavailable, ConfigurationError
from .signal import Signal, all_signals
from .stats import Stats

hiredis: Any
try:
    import hiredis
except ImportError:  # pragma: no cover - exercised when the extra is not installed
    hiredis = None

__all__ = ["Subscription", "Worker", "compute_backoff", "list_workers"]

logger = logging.getLogger(__name__)

#: How often the worker writes its heartbeat and sends a probe through Redis.
PULSE_INTERVAL_S = 5.0
#: Lifetime of the heartbeat key: a worker that stops pulsing disappears after this.
HEARTBEAT_TTL_S = 15
#: Time a probe may take to come back before the subscription is declared dead.
PROBE_TIMEOUT_S = 5.0
#: Longest a blocking socket read waits before the loop checks its flags.
READ_TICK_S = 0.25
#: Bytes read from the subscription socket at once.
READ_SIZE = 65536
#: First reconnect delay; doubles each failed attempt.
BACKOFF_BASE_S = 0.1
#: Longest delay between reconnect attempts.
BACKOFF_MAX_S = 5.0
#: Default time a warm stop gets to run everything received, from the stop request.
SHUTDOWN_TIMEOUT_S = 30.0
#: Longest Redis may stay silent while a stopping worker waits for it to confirm UNSUBSCRIBE.
UNSUBSCRIBE_TIMEOUT_S = 5.0
#: How often the thread in ``Worker.run`` checks for a stop request and its deadline.
SUPERVISE_TICK_S = 0.1
#: Time ``Worker.stop`` waits beyond the shutdown timeout for an abandoned stop to finish.
STOP_GRACE_S = 10.0
#: Messages a pool may hold per thread before the reader waits (a slow receiver slows reading).
POOL_BACKLOG_PER_THREAD = 4
#: Most buffered messages counted (not run) when a stop is abandoned; the log says "at least".
ABANDON_COUNT_LIMIT = 100_000
#: Longest an abandoning stop waits for the reader to leave the buffers it counts.
ABANDON_LOCK_S = 1.0
#: Longest an abandoning stop waits for the pulse thread to end.
ABANDON_PULSE_JOIN_S = 0.5
#: Connect and reply timeout of the abandoning stop's one attempt to remove the heartbeat.
ABANDON_REDIS_TIMEOUT_S = 1.0

#: Channels below the namespace whose names start with this are the worker's own.
INTERNAL_PREFIX = "__"


def compute_backoff(
    attempt: int,
    *,
    base_s: float = BACKOFF_BASE_S,
    max_s: float = BACKOFF_MAX_S,
    jitter: Callable[[], float] = random.random,
) -> float:
    """Delay before reconnect ``attempt`` (1-based): capped exponential with jitter.

    The delay is drawn between half and all of ``min(max_s, base_s * 2**(attempt-1))``,
    so workers that lost Redis together do not all come back at the same instant.
    """
    if attempt < 1:
        return 0.0
    ceiling = min(max_s, base_s * 2.0 ** min(attempt - 1, 32))
    return ceiling * (0.5 + 0.5 * jitter())


def heartbeat_key(namespace: str, worker_id: str) -> str:
    """The key where a worker keeps its heartbeat."""
    return f"{namespace}:{INTERNAL_PREFIX}worker__:{worker_id}"


def probe_channel(namespace: str, worker_id: str) -> str:
    """The channel a worker sends its own probes through."""
    return f"{namespace}:{INTERNAL_PREFIX}probe__:{worker_id}"


def list_workers(client: Client) -> list[dict[str, Any]]:
    """Return the live workers of ``client``'s namespace, read from their heartbeats."""
    pattern = heartbeat_key(client.namespace, "*")

    def read(r: redis.Redis) -> list[Any]:
        keys = sorted(r.scan_iter(match=pattern, count=500))
        return list(r.mget(keys)) if keys else []

    workers = []
    for raw in client.call(read):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict):
            workers.append(info)
    return workers


class StalledSubscription(Exception):
    """The subscription stopped delivering: a probe did not come back in time."""


Route = Callable[[bytes], None]


class Subscription:
    """A pub/sub subscription read in one tight loop, kept alive through failures.

    ``routes`` maps each channel to the function that handles its messages.
    The connection comes from the client's pool settings, so URLs, AUTH/ACL and
    TLS work exactly as for sending. ``run`` blocks until :meth:`stop`.
    """

    def __init__(
        self,
        client: Client,
        routes: dict[str, Route],
        *,
        probe: str | None = None,
        patterns: Iterable[str] = (),
        on_pattern: Callable[[bytes, bytes], None] | None = None,
        use_hiredis: bool | None = None,
        stats: Stats | None = None,
    ) -> None:
        self.client = client
        self.routes = {name.encode(): fn for name, fn in routes.items()}
        self.patterns = [p.encode() for p in patterns]
        self.on_pattern = on_pattern
        self.probe = probe.encode() if probe else None
        self.use_hiredis = (hiredis is not None) if use_hiredis is None else use_hiredis
        self.stats = stats if stats is not None else Stats()
        self.subscribed = threading.Event()
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

    def send_probe(self) -> None:
        """Publish a probe that must come back through this subscription in time."""
        if self.probe is None or not self.subscribed.is_set():
            return
        token = uuid.uuid4().hex.encode()
        if self._probe_token is None:
            self._probe_token, self._probe_sent_at = token, time.monotonic()
        else:
            token = self._probe_token  # the previous probe is still out: resend it
        if self.client.publish(self.probe.decode(), token) == 0:
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
                        mask_url(self.client.url),
                    )
                first, attempt = False, 0
                self._read(conn)
            except (redis.RedisError, OSError, StalledSubscription) as exc:
                self.subscribed.clear()
                if self._stopping:
                    if self._draining:
                        logger.warning(
                            "Subscription to %s lost while stopping (%s): "
                            "messages still on their way to this worker are lost",
                            mask_url(self.client.url),
                            self.client._detail(exc),
                        )
                    break
                attempt += 1
                delay = compute_backoff(attempt)
                logger.warning(
                    "Subscription to %s lost (%s); reconnecting in %.2fs",
                    mask_url(self.client.url),
                    self.client._detail(exc),
                    delay,
                )
                self._sleep(delay)
            finally:
                self.subscribed.clear()
                if conn is not None:
                    conn.disconnect()

    def _sleep(self, delay: float) -> None:
        deadline = time.monotonic() + delay
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, READ_TICK_S))

    def _connect(self) -> Any:
        # RESP2 on this connection whatever the pool speaks: messages then come
        # as plain arrays, the shape the tight loop tests for.
        conn = resp2_connection(self.client.pool)
        self._probe_token, self._stalled = None, False
        self._unconfirmed = len(self.routes) + len(self.patterns)
        if self.routes:
            conn.send_command("SUBSCRIBE", *self.routes)
        if self.patterns:
            conn.send_command("PSUBSCRIBE", *self.patterns)
        return conn

    def _read(self, conn: Any) -> None:
        if self.use_hiredis:
            self._read_hiredis(conn)
        else:
            self._read_resp(conn)

    def _read_hiredis(self, conn: Any) -> None:
        sock = conn._sock
        if sock is None:
            raise redis.ConnectionError("not connected")
        sock.settimeout(READ_TICK_S)
        reader = hiredis.Reader()
        buf = bytearray(READ_SIZE)
        recv_into, feed, gets = sock.recv_into, reader.feed, reader.gets
        routes, control = self.routes, self._control
        self._count_buffered = lambda: _count_buffered_hiredis(sock, reader)
        while not self._stopping:
            try:
                n = recv_into(buf)
            except TimeoutError:
                self._check_alive()
                continue
            if not n:
                raise redis.ConnectionError("Redis closed the connection")
            feed(buf, 0, n)
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

            def next_reply() -> Any:
                reply = gets()
                while reply is False:
                    n = recv_into(buf)  # TimeoutError: Redis sent nothing for a tick
                    if not n:
                        raise redis.ConnectionError("Redis closed the connection")
                    feed(buf, 0, n)
                    reply = gets()
                return reply

            self._drain(conn, next_reply)

    def _read_resp(self, conn: Any) -> None:
        # Portable path without hiredis: redis-py's own parser, one reply at a time.
        routes, control = self.routes, self._control
        self._count_buffered = lambda: _count_buffered_resp(conn)
        while not self._stopping:
            if not conn.can_read(timeout=READ_TICK_S):
                self._check_alive()
                continue
            reply = conn.read_response(disconnect_on_error=True)
            if type(reply) is list and reply[0] == b"message":
                routes[reply[1]](reply[2])
            else:
                control(reply)
        if self._draining:

            def next_reply() -> Any:
                if not conn.can_read(timeout=READ_TICK_S):
                    raise TimeoutError
                return conn.read_response(disconnect_on_error=True)

            self._drain(conn, next_reply)

    def _drain(self, conn: Any, next_reply: Callable[[], Any]) -> None:
        # The warm stop, outside the tight loop: UNSUBSCRIBE, then dispatch
        # every message that arrives before Redis confirms it (the last
        # confirmation says 0 subscriptions left; nothing comes after it).
        self.subscribed.clear()  # probes stop: they could not come back
        if self.routes:
            conn.send_command("UNSUBSCRIBE", check_health=False)
        if self.patterns:
            conn.send_command("PUNSUBSCRIBE", check_health=False)
        logger.debug("Unsubscribing from %s", mask_url(self.client.url))
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
                    f"Redis refused to unsubscribe: {self.client._scrub(str(reply))}"
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
                    mask_url(self.client.url),
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
                f"Redis refused the subscription: {self.client._scrub(str(reply))}"
            )
        if type(reply) is not list or not reply:
            raise redis.ConnectionError(
                f"unexpected reply on the subscription: {self.client._scrub(repr(reply)):.80}"
            )
        kind = reply[0]
        if kind == b"pmessage" and self.on_pattern is not None:
            self.on_pattern(reply[2], reply[3])
        elif kind in (b"subscribe", b"psubscribe"):
            self._unconfirmed -= 1
            if self._unconfirmed == 0:
                self.subscribed.set()
                logger.info(
                    "Subscribed to %d channels on %s",
                    len(self.routes) + len(self.patterns),
                    mask_url(self.client.url),
                )
        elif kind not in (b"unsubscribe", b"punsubscribe", b"pong"):
            raise redis.ConnectionError(f"unexpected reply on the subscription: {kind!r:.80}")


#: What the drain's reply function gives back when Redis sent nothing for a tick.
_NOTHING: Any = object()


def _count_messages(gets: Callable[[], Any], limit: int) -> int:
    count = 0
    while count < limit and (reply := gets()) is not False:
        if type(reply) is list and reply and reply[0] in (b"message", b"pmessage"):
            count += 1
    return count


def _count_buffered_hiredis(sock: Any, reader: Any) -> int:
    # The parser's replies, then what the socket holds right now (no waiting).
    count = _count_messages(reader.gets, ABANDON_COUNT_LIMIT)
    sock.settimeout(0.0)
    buf = bytearray(READ_SIZE)
    while count < ABANDON_COUNT_LIMIT:
        try:
            n = sock.recv_into(buf)
        except OSError:  # BlockingIOError: nothing more in the socket
            break
        if not n:
            break
        reader.feed(buf, 0, n)
        count += _count_messages(reader.gets, ABANDON_COUNT_LIMIT - count)
    return count


def _count_buffered_resp(conn: Any) -> int:
    count = 0
    while count < ABANDON_COUNT_LIMIT and conn.can_read(timeout=0):
        reply = conn.read_response(disconnect_on_error=True)
        if type(reply) is list and reply and reply[0] in (b"message", b"pmessage"):
            count += 1
    return count


class Worker:
    """Runs the receivers of this process for signals sent by any process.

    ``signals`` defaults to every signal that has a receiver when :meth:`run`
    starts. ``concurrency=1`` handles messages one at a time, in order; with
    ``concurrency=N`` a pool of N threads calls receivers, so messages may
    finish out of order (even messages of one signal). :meth:`run` blocks;
    :meth:`start` runs the worker in a thread and :meth:`stop` ends it warmly.
    When the client has a secret, a message sent more than ``max_age_s``
    ago, or one seen before from its origin, is rejected as a replay.
    """

    #: True once a stop gave up on messages (past the shutdown timeout, or
    #: :meth:`stop_now`): they were logged, and receivers may still be running.
    abandoned = False
    # Stop requests: plain flags, so that setting them from a signal handler
    # takes no lock (a lock the interrupted thread may hold, or a gevent
    # switch inside the hub); the thread in run() polls them.
    _stop_requested = False
    _stop_now_requested = False
    _reader_error: BaseException | None = None
    _dispatcher: Dispatcher | None = None

    def __init__(
        self,
        client: Client | None = None,
        *,
        signals: Iterable[Signal] | None = None,
        concurrency: int = 1,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
        use_hiredis: bool | None = None,
        max_age_s: float = REPLAY_WINDOW_S,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        if not max_age_s > 0:
            raise ConfigurationError("max_age_s must be positive")
        self._client = client
        self._signals = list(signals) if signals is not None else None
        self.concurrency = concurrency
        self.shutdown_timeout_s = shutdown_timeout_s
        self.max_age_s = max_age_s
        self.use_hiredis = use_hiredis
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = Stats()
        self.started_at = 0.0
        self.signals: list[Signal] = []
        self._subscription: Subscription | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop = EventLoopThread()

    @property
    def client(self) -> Client:
        """The client the worker reads and writes through (the default one if none given)."""
        if self._client is None:
            from .config import default_client

            self._client = default_client(Client)
        return self._client

    @property
    def ready(self) -> bool:
        """True while the worker is subscribed and receiving."""
        sub = self._subscription
        return sub is not None and sub.subscribed.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the worker is subscribed; return False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._subscription is None and not self._stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        sub = self._subscription
        if sub is None:
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return sub.subscribed.wait(left)

    def _collect(self) -> list[Signal]:
        signals = self._signals if self._signals is not None else all_signals()
        chosen = [s for s in signals if s.has_remote_receivers()]
        if not chosen:
            raise ConfigurationError(
                "no signal has a receiver: import the modules that connect them (-A MODULE)"
            )
        return sorted(chosen, key=lambda s: s.name)

    def run(self) -> None:
        """Subscribe and dispatch until :meth:`stop` or :meth:`stop_now` (blocks).

        Messages are read on a thread of their own; the calling thread
        supervises. On :meth:`stop` the reader unsubscribes and dispatches
        what was already on its way, and everything received runs, within
        ``shutdown_timeout_s`` of the request. Past that, or on
        :meth:`stop_now`, ``run`` logs what it abandons (the signal and
        message id of each receiver in flight, the count of messages received
        and not run), removes the heartbeat and returns with :attr:`abandoned`
        set: receivers still running can not be interrupted, so the process
        should then exit (``sigbroker worker`` does, with ``os._exit``).
        """
        self.signals = self._collect()
        client = self.client
        dispatcher = Dispatcher(
            client.codec,
            self.stats,
            self._loop,
            threads=self.concurrency,
            max_age_s=self.max_age_s,
        )
        pool = _Pool(self.concurrency) if self.concurrency > 1 else None
        submit = pool.submit if pool is not None else None
        routes = {client.channel(s): dispatcher.handler(s, submit) for s in self.signals}
        sub = Subscription(
            client,
            routes,
            probe=probe_channel(client.namespace, self.id),
            use_hiredis=self.use_hiredis,
            stats=self.stats,
        )
        self._dispatcher, self._subscription = dispatcher, sub
        self.started_at = time.time()
        pulse = threading.Thread(target=self._pulse, name="sigbroker-pulse", daemon=True)
        reader = threading.Thread(target=self._read, args=(sub,), name="sigbroker-reader")
        reader.daemon = True  # a receiver that never returns must not keep the process
        logger.info(
            "Worker %s subscribing to %d signals on %s",
            self.id,
            len(self.signals),
            mask_url(client.url),
        )
        logger.debug("Worker %s: starting the pulse and the reader", self.id)
        pulse.start()
        reader.start()
        try:
            self._supervise(reader, sub, pool)
        except BaseException:  # KeyboardInterrupt without a handler: stop at once
            if not self.abandoned:
                self._abandon(sub, pool, "interrupted")
            raise
        finally:
            self._shutdown(pulse, pool)
        if self._reader_error is not None:
            raise self._reader_error

    def _read(self, sub: Subscription) -> None:
        try:
            sub.run()
        except BaseException as exc:  # handed to run(), in the caller's thread
            self._reader_error = exc

    def _supervise(self, reader: threading.Thread, sub: Subscription, pool: _Pool | None) -> None:
        # Wait for the reader to end and the pool to empty, acting on stop
        # requests; every wait is one tick long.
        deadline: float | None = None
        while reader.is_alive() or (pool is not None and not pool.idle()):
            if self._stop_now_requested:
                self._abandon(sub, pool, "asked to stop now")
                return
            if deadline is None and self._stop_requested:
                deadline = time.monotonic() + self.shutdown_timeout_s
                logger.info(
                    "Worker %s stopping: no new messages; running what it received (at most %gs)",
                    self.id,
                    self.shutdown_timeout_s,
                )
                sub.drain()
            elif deadline is not None and time.monotonic() >= deadline:
                self._abandon(
                    sub,
                    pool,
                    f"still running after the shutdown timeout ({self.shutdown_timeout_s:g}s)",
                )
                return
            if reader.is_alive():
                reader.join(SUPERVISE_TICK_S)
            elif pool is not None:
                pool.wait_idle(SUPERVISE_TICK_S)

    def _abandon(self, sub: Subscription, pool: _Pool | None, why: str) -> None:
        self.abandoned = True
        not_run = sub.abandon()
        if pool is not None:
            not_run += pool.cancel()
        # Published, received and never to run: lost, like a gap in a sequence.
        with self.stats.lock:
            self.stats.lost += not_run
        dispatcher = self._dispatcher
        in_flight = dispatcher.in_flight() if dispatcher is not None else []
        logger.error(
            "Worker %s abandons its stop (%s): receivers in flight: %s; "
            "messages received and not run: %s%d",
            self.id,
            why,
            ", ".join(f"{name} (message {mid})" for name, mid in in_flight) or "none",
            "at least " if not_run >= ABANDON_COUNT_LIMIT else "",
            not_run,
        )

    def _shutdown(self, pulse: threading.Thread, pool: _Pool | None) -> None:
        # The reader has ended (or was abandoned): undo the rest of run() in
        # reverse: the pulse and its heartbeat, the pool, the dispatcher.
        self._stop.set()
        logger.debug("Worker %s: stopping the pulse", self.id)
        pulse.join(timeout=ABANDON_PULSE_JOIN_S if self.abandoned else PULSE_INTERVAL_S + 1)
        logger.debug("Worker %s: removing the heartbeat", self.id)
        if self.abandoned:
            self._delete_heartbeat_once()
        else:
            try:
                self.client.call(lambda r: r.delete(self._heartbeat_key))
            except BrokerUnavailable as exc:
                logger.debug("Could not remove the heartbeat: %s", exc)
        if pool is not None and not self.abandoned:
            logger.debug("Worker %s: stopping the receivers' threads", self.id)
            pool.close()
        if self._dispatcher is not None:
            # Nothing more will arrive: every gap still open is a loss.
            logger.debug("Worker %s: counting the messages it never received", self.id)
            self._dispatcher.settle(everything=True)
        if self.abandoned:
            # Threads stuck in receivers (the async loop's too) can not be
            # joined: leave them to the process's exit.
            logger.info(
                "Worker %s stopped, abandoning what was logged: %s", self.id, self.stats.as_dict()
            )
            return
        logger.debug("Worker %s: stopping the async loop", self.id)
        self._loop.close()
        logger.info("Worker %s stopped: %s", self.id, self.stats.as_dict())

    def _delete_heartbeat_once(self) -> None:
        # An abandoning stop exits at once: one short attempt, no retries.
        client = self.client
        conn: Any = None
        try:
            conn = resp2_connection(client.pool, timeout_s=ABANDON_REDIS_TIMEOUT_S)
            conn.send_command("DEL", self._heartbeat_key)
            conn.read_response()
        except (redis.RedisError, OSError) as exc:
            logger.debug("Could not remove the heartbeat: %s", client._detail(exc))
        finally:
            if conn is not None:
                conn.disconnect()

    @property
    def _heartbeat_key(self) -> str:
        return heartbeat_key(self.client.namespace, self.id)

    def heartbeat(self) -> dict[str, Any]:
        """The worker's heartbeat record, as ``sigbroker workers`` shows it."""
        host, pid, _ = self.id.rsplit(":", 2)
        return {
            "id": self.id,
            "host": host,
            "pid": int(pid),
            "started_at": self.started_at,
            "last_seen": time.time(),
            "concurrency": self.concurrency,
            "signals": [s.name for s in self.signals],
            **self.stats.as_dict(),
        }

    def _write_heartbeat(self, record: str) -> None:
        self.client.call(lambda r: r.set(self._heartbeat_key, record, ex=HEARTBEAT_TTL_S))

    def _pulse(self) -> None:
        # The probe goes first and on its own: a heartbeat write stuck on a dead
        # pooled connection must not delay the check of the subscription.
        while not self._stop.is_set():
            sub = self._subscription
            try:
                if sub is not None:
                    sub.send_probe()
            except BrokerUnavailable as exc:
                logger.debug("Probe not sent: %s", exc)
            if self._dispatcher is not None:
                self._dispatcher.settle()  # gaps missing long enough count as lost
            record = json.dumps(self.heartbeat())
            if self._stop.is_set():
                break  # the stop removes the heartbeat: a late write would bring it back
            try:
                self._write_heartbeat(record)
            except BrokerUnavailable as exc:
                logger.debug("Heartbeat not written: %s", exc)
            self._stop.wait(PULSE_INTERVAL_S)

    def start(self) -> None:
        """Run the worker in a background thread of this process."""
        if self._thread is not None:
            raise RuntimeError("worker already started")
        self._thread = threading.Thread(target=self.run, name="sigbroker-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop warmly: no new messages; everything received runs, then :meth:`run` returns.

        The subscription ends with UNSUBSCRIBE, and the messages Redis sent
        before confirming it are dispatched too: a warm stop loses nothing the
        worker holds. Past ``shutdown_timeout_s`` the stop is abandoned (see
        :meth:`run`). Safe to call from a signal handler: it only sets a flag.
        For a worker started with :meth:`start`, waits up to ``timeout``
        (default: the shutdown timeout and :data:`STOP_GRACE_S`) and returns
        whether it stopped with nothing abandoned; otherwise returns True.
        """
        self._stop_requested = True
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(self.shutdown_timeout_s + STOP_GRACE_S if timeout is None else timeout)
        return not thread.is_alive() and not self.abandoned

    def stop_now(self) -> None:
        """Stop at once: :meth:`run` logs what it abandons, removes the heartbeat, returns.

        Receivers in flight are not interrupted (Python threads can not be):
        exit the process after :meth:`run` returns. Safe to call from a signal
        handler: it only sets a flag.
        """
        self._stop_now_requested = True
        self._stop_requested = True


class _Pool:
    """Threads that call receivers, with a bound on the messages handed to them.

    The bound makes a slow receiver slow the reader down rather than grow a
    queue without limit; the counts tell a stop what is still to run.
    """

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="sigbroker-recv")
        self._slots = threading.Semaphore(threads * POOL_BACKLOG_PER_THREAD)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._in_hand = 0  # a message the reader holds while it waits for a slot
        self._queued = 0  # handed to the executor, not started
        self._running = 0
        self._cancelled = False

    def submit(self, call: Callable[[], None]) -> None:
        """Have a thread run ``call``; wait, a tick at a time, while the pool is full."""
        if not self._slots.acquire(blocking=False) and not self._wait_for_slot():
            return  # cancelled meanwhile: counted by cancel() as in hand
        with self._lock:
            if self._cancelled:
                return  # counted by cancel() if it was in hand
            self._in_hand = 0
            self._queued += 1
            self._executor.submit(self._run, call)

    def _wait_for_slot(self) -> bool:
        with self._lock:
            if self._cancelled:
                return False
            self._in_hand = 1
        while not self._slots.acquire(timeout=READ_TICK_S):
            if self._cancelled:
                return False
        return True

    def _run(self, call: Callable[[], None]) -> None:
        with self._lock:
            self._queued -= 1
            if self._cancelled:
                return  # counted by cancel() as queued
            self._running += 1
        try:
            call()
        finally:
            self._slots.release()
            with self._lock:
                self._running -= 1
                if not (self._running or self._queued):
                    self._changed.notify_all()

    def idle(self) -> bool:
        """True when nothing is queued, running, or waiting for a slot."""
        with self._lock:
            return not (self._in_hand or self._queued or self._running)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the pool to be idle; return whether it is."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not (self._in_hand or self._queued or self._running), timeout_s
            )

    def cancel(self) -> int:
        """Start nothing more; return how many messages were handed over and not started."""
        with self._lock:
            self._cancelled = True
            self._executor.shutdown(wait=False, cancel_futures=True)
            return self._in_hand + self._queued

    def close(self) -> None:
        """Let the idle threads go (quick: the worker waited for the pool to empty)."""
        self._executor.shutdown(wait=True)
