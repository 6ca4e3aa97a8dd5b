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

from .client import Client, mask_url
from .dispatch import Dispatcher, EventLoopThread, Stats
from .errors import BrokerUnavailable, ConfigurationError
from .signal import Signal, all_signals

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
#: Default time that receivers in flight get to finish on a warm stop.
SHUTDOWN_TIMEOUT_S = 30.0

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
        self._probe_token: bytes | None = None
        self._probe_sent_at = 0.0
        self._stalled = False
        self._unconfirmed = 0
        if self.probe is not None:
            self.routes[self.probe] = self._probe_returned

    # -- control from other threads ------------------------------------------

    def stop(self) -> None:
        """Stop reading; ``run`` returns after the message in hand is dispatched."""
        self._stopping = True

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
                    break
                attempt += 1
                delay = compute_backoff(attempt)
                logger.warning(
                    "Subscription to %s lost (%s); reconnecting in %.2fs",
                    mask_url(self.client.url),
                    exc or type(exc).__name__,
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
        pool = self.client.pool
        # RESP2 on this connection whatever the pool speaks: messages then come
        # as plain arrays, the shape the tight loop tests for.
        options = {**pool.connection_kwargs, "protocol": 2}
        # redis-py leaves Connection's methods untyped; treat it as Any here.
        conn: Any = pool.connection_class(**options)
        conn.connect()
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
                    return
                reply = gets()

    def _read_resp(self, conn: Any) -> None:
        # Portable path without hiredis: redis-py's own parser, one reply at a time.
        routes, control = self.routes, self._control
        while not self._stopping:
            if not conn.can_read(timeout=READ_TICK_S):
                self._check_alive()
                continue
            reply = conn.read_response(disconnect_on_error=True)
            if type(reply) is list and reply[0] == b"message":
                routes[reply[1]](reply[2])
            else:
                control(reply)

    def _control(self, reply: Any) -> None:
        if isinstance(reply, Exception):
            raise redis.ConnectionError(f"Redis refused the subscription: {reply}")
        if type(reply) is not list or not reply:
            raise redis.ConnectionError(f"unexpected reply on the subscription: {reply!r:.80}")
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


class Worker:
    """Runs the receivers of this process for signals sent by any process.

    ``signals`` defaults to every signal that has a receiver when :meth:`run`
    starts. ``concurrency=1`` handles messages one at a time, in order; with
    ``concurrency=N`` a pool of N threads calls receivers, so messages may
    finish out of order (even messages of one signal). :meth:`run` blocks;
    :meth:`start` runs the worker in a thread and :meth:`stop` ends it warmly.
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        signals: Iterable[Signal] | None = None,
        concurrency: int = 1,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
        use_hiredis: bool | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self._client = client
        self._signals = list(signals) if signals is not None else None
        self.concurrency = concurrency
        self.shutdown_timeout_s = shutdown_timeout_s
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

            self._client = default_client()
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
        """Subscribe and dispatch until :meth:`stop` is called (blocks)."""
        self.signals = self._collect()
        client = self.client
        dispatcher = Dispatcher(client.codec, self.stats, self._loop, threads=self.concurrency)
        routes = {client.channel(s): dispatcher.handler(s) for s in self.signals}
        executor = None
        if self.concurrency > 1:
            executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="sigbroker-recv")
            routes = {ch: _pooled(executor, fn, self.concurrency * 4) for ch, fn in routes.items()}
        sub = Subscription(
            client,
            routes,
            probe=probe_channel(client.namespace, self.id),
            use_hiredis=self.use_hiredis,
            stats=self.stats,
        )
        self._subscription = sub
        self.started_at = time.time()
        pulse = threading.Thread(target=self._pulse, name="sigbroker-pulse", daemon=True)
        logger.info(
            "Worker %s subscribing to %d signals on %s",
            self.id,
            len(self.signals),
            mask_url(client.url),
        )
        pulse.start()
        try:
            sub.run()
        finally:
            self._shutdown(pulse, executor)

    def _shutdown(self, pulse: threading.Thread, executor: ThreadPoolExecutor | None) -> None:
        self._stop.set()
        logger.debug("Worker %s: stopping the pulse", self.id)
        pulse.join(timeout=PULSE_INTERVAL_S + 1)
        if executor is not None:
            logger.debug("Worker %s: waiting for receivers in flight", self.id)
            _drain(executor, self.shutdown_timeout_s)
        logger.debug("Worker %s: stopping the async loop", self.id)
        self._loop.close()
        logger.debug("Worker %s: removing the heartbeat", self.id)
        try:
            self.client.call(lambda r: r.delete(self._heartbeat_key))
        except BrokerUnavailable as exc:
            logger.debug("Could not remove the heartbeat: %s", exc)
        logger.info("Worker %s stopped: %s", self.id, self.stats.as_dict())

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
            try:
                self._write_heartbeat(json.dumps(self.heartbeat()))
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
        """Stop warmly: no more reading, receivers in flight finish.

        Safe to call from a signal handler or another thread; returns whether a
        worker started with :meth:`start` ended within ``timeout``.
        """
        self._stop.set()
        if self._subscription is not None:
            self._subscription.stop()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(self.shutdown_timeout_s if timeout is None else timeout)
        return not thread.is_alive()


def _pooled(executor: ThreadPoolExecutor, handle: Route, in_flight: int) -> Route:
    # A bounded number of messages in flight, so a slow receiver slows the
    # reading loop instead of growing an unbounded queue.
    slots = threading.BoundedSemaphore(in_flight)

    def run(data: bytes) -> None:
        try:
            handle(data)
        finally:
            slots.release()

    def submit(data: bytes) -> None:
        slots.acquire()
        executor.submit(run, data)

    return submit


def _drain(executor: ThreadPoolExecutor, timeout_s: float) -> None:
    done = threading.Event()

    def wait() -> None:
        executor.shutdown(wait=True)
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    if not done.wait(timeout_s):
        logger.warning("Receivers still running after %.1fs; abandoning them", timeout_s)
