"""The worker: receive the signals that have receivers and dispatch what arrives.

A :class:`Worker` is built from parts with one job each, and speaks only to
the transport's interface (it imports no redis):

* a :class:`~sigbroker.transport.base.Source` of the transport delivers the
  messages of the signals' channels (for Redis pub/sub: the subscription
  with its reader, reconnects and probe); with ``group``, a second source
  reads the durable signals' streams as one consumer of that group (for
  Redis: :mod:`~sigbroker.transport.redis_streams`);
* a :class:`~sigbroker.dispatch.Dispatcher` decodes, verifies and calls the
  receivers, on the reading thread or on a :class:`~sigbroker.pool.Pool`;
* a pulse thread writes the heartbeat key and has the source check itself.

The library never installs OS signal handlers: ``sigbroker worker`` does, and
calls :meth:`Worker.stop` on the first SIGTERM/SIGINT.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

from ._aio import EventLoopThread
from .client import Client
from .dispatch import REPLAY_WINDOW_S, Dispatcher, Hook
from .durable import CLAIM_IDLE_S, MAX_DELIVERIES, ConsumerOptions
from .errors import BrokerUnavailable, ConfigurationError
from .pool import Pool
from .signal import Signal, all_signals
from .stats import Stats
from .transport.base import ABANDON_COUNT_LIMIT, Combined, Source

__all__ = ["Worker", "list_workers"]

logger = logging.getLogger(__name__)

#: How often the worker writes its heartbeat and sends a probe through Redis.
PULSE_INTERVAL_S = 5.0
#: Lifetime of the heartbeat key: a worker that stops pulsing disappears after this.
HEARTBEAT_TTL_S = 15
#: Default time a warm stop gets to run everything received, from the stop request.
SHUTDOWN_TIMEOUT_S = 30.0
#: How often the thread in ``Worker.run`` checks for a stop request and its deadline.
SUPERVISE_TICK_S = 0.1
#: Time ``Worker.stop`` waits beyond the shutdown timeout for an abandoned stop to finish.
STOP_GRACE_S = 10.0
#: Longest an abandoning stop waits for the pulse thread to end.
ABANDON_PULSE_JOIN_S = 0.5
#: Connect and reply timeout of the abandoning stop's one attempt to remove the heartbeat.
ABANDON_REDIS_TIMEOUT_S = 1.0

#: Channels below the namespace whose names start with this are the worker's own.
INTERNAL_PREFIX = "__"


def heartbeat_key(namespace: str, worker_id: str) -> str:
    """The key where a worker keeps its heartbeat."""
    return f"{namespace}:{INTERNAL_PREFIX}worker__:{worker_id}"


def probe_channel(namespace: str, worker_id: str) -> str:
    """The channel a worker sends its own probes through."""
    return f"{namespace}:{INTERNAL_PREFIX}probe__:{worker_id}"


def list_workers(client: Client) -> list[dict[str, Any]]:
    """Return the live workers of ``client``'s namespace, read from their heartbeats."""
    pattern = heartbeat_key(client.namespace, "*")

    workers = []
    for raw in client.transport.values(pattern):
        try:
            info = json.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict):
            workers.append(info)
    return workers


class Worker:
    """Runs the receivers of this process for signals sent by any process.

    ``signals`` defaults to every signal that has a receiver when :meth:`run`
    starts. ``concurrency=1`` handles messages one at a time, in order; with
    ``concurrency=N`` a pool of N threads calls receivers, so messages may
    finish out of order (even messages of one signal). :meth:`run` blocks;
    :meth:`start` runs the worker in a thread and :meth:`stop` ends it warmly.
    When the client has a secret, a message sent more than ``max_age_s``
    ago, or one seen before from its origin, is rejected as a replay.
    ``before_message`` and ``after_message`` are called around the receivers
    of each message, in the thread that runs them (see
    :class:`~sigbroker.dispatch.Dispatcher`); ``manage.py sigbroker worker``
    closes Django's stale database connections there.

    Durable signals (``Signal(durable=True)``) are read in the consumer
    ``group`` (a service: each group processes every message once, its
    workers share them), which is required when there are any. A group
    created by this worker starts at the stream's end, or with
    ``from_start`` at its first entry. A receiver that raises is retried
    alone with backoff; after ``max_deliveries`` the message goes to the
    group's dead letters. Messages held by a worker that died are claimed
    by the others; anything pending longer than ``claim_idle_s`` too.
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
        max_age_s: float = REPLAY_WINDOW_S,
        before_message: Hook | None = None,
        after_message: Hook | None = None,
        group: str | None = None,
        from_start: bool = False,
        max_deliveries: int = MAX_DELIVERIES,
        claim_idle_s: float = CLAIM_IDLE_S,
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
        self.before_message = before_message
        self.after_message = after_message
        #: How durable signals are consumed; None without a group.
        self.consumer: ConsumerOptions | None = (
            None
            if group is None
            else ConsumerOptions(group, from_start, max_deliveries, claim_idle_s)
        )
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = Stats()
        self.started_at = 0.0
        self.signals: list[Signal] = []
        self._source: Source | None = None
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
        source = self._source
        return source is not None and source.ready.is_set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the worker is subscribed; return False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._source is None and not self._stop.is_set():
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        source = self._source
        if source is None:
            return False
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return source.ready.wait(left)

    def _collect(self) -> list[Signal]:
        signals = self._signals if self._signals is not None else all_signals()
        chosen = [s for s in signals if s.has_remote_receivers()]
        if not chosen:
            raise ConfigurationError(
                "no signal has a receiver: import the modules that connect them (-A MODULE)"
            )
        durable = [s.name for s in chosen if s.durable]
        if durable and self.consumer is None:
            raise ConfigurationError(
                f"durable signals need a consumer group: pass --group NAME (one per service) "
                f"to consume {', '.join(durable)}"
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
        # Pub/sub and durable signals each have a reader (and a pool): the
        # counters are shared by that many threads.
        kinds = len({s.durable for s in self.signals})
        dispatcher = Dispatcher(
            client.codec,
            self.stats,
            self._loop,
            threads=self.concurrency * kinds,
            max_age_s=self.max_age_s,
            before_message=self.before_message,
            after_message=self.after_message,
        )
        sources, pools = self._sources(dispatcher)
        source = sources[0] if len(sources) == 1 else Combined(sources)
        self._dispatcher, self._source = dispatcher, source
        self.started_at = time.time()
        pulse = threading.Thread(target=self._pulse, name="sigbroker-pulse", daemon=True)
        reader = threading.Thread(target=self._read, args=(source,), name="sigbroker-reader")
        reader.daemon = True  # a receiver that never returns must not keep the process
        logger.info(
            "Worker %s subscribing to %d signals on %s",
            self.id,
            len(self.signals),
            client.transport.display,
        )
        logger.debug("Worker %s: starting the pulse and the reader", self.id)
        pulse.start()
        reader.start()
        try:
            self._supervise(reader, source, pools)
        except BaseException:  # KeyboardInterrupt without a handler: stop at once
            if not self.abandoned:
                self._abandon(source, pools, "interrupted")
            raise
        finally:
            self._shutdown(pulse, pools)
        if self._reader_error is not None:
            raise self._reader_error

    def _sources(self, dispatcher: Dispatcher) -> tuple[list[Source], list[tuple[Pool, bool]]]:
        """The pub/sub source and the durable one (each if it has signals), and their pools.

        Each source has its own pool (``concurrency`` threads) when
        ``concurrency`` is above 1; the flag says whether a message the pool
        drops on an abandoned stop is lost (pub/sub) or stays pending (durable).
        """
        client = self.client
        sources: list[Source] = []
        pools: list[tuple[Pool, bool]] = []
        plain = [s for s in self.signals if not s.durable]
        durable = [s for s in self.signals if s.durable]
        if plain:
            pool = Pool(self.concurrency) if self.concurrency > 1 else None
            submit = pool.submit if pool is not None else None
            routes = {client.channel(s): dispatcher.handler(s, submit) for s in plain}
            probe = probe_channel(client.namespace, self.id)
            sources.append(client.transport.source(routes, stats=self.stats, probe=probe))
            if pool is not None:
                pools.append((pool, True))
        if durable:
            assert self.consumer is not None  # checked by _collect
            group = self.consumer.group
            pool = Pool(self.concurrency) if self.concurrency > 1 else None
            submit = pool.submit if pool is not None else None
            streams = {
                client.channel(s): dispatcher.durable_route(s, group, submit) for s in durable
            }
            namespace = client.namespace
            sources.append(
                client.transport.stream_source(
                    streams,
                    options=self.consumer,
                    consumer=self.id,
                    namespace=namespace,
                    alive_key=lambda worker_id: heartbeat_key(namespace, worker_id),
                    stats=self.stats,
                )
            )
            if pool is not None:
                pools.append((pool, False))
        return sources, pools

    def _read(self, source: Source) -> None:
        try:
            source.run()
        except BaseException as exc:  # handed to run(), in the caller's thread
            self._reader_error = exc

    def _supervise(
        self, reader: threading.Thread, source: Source, pools: list[tuple[Pool, bool]]
    ) -> None:
        # Wait for the reader to end and the pools to empty, acting on stop
        # requests; every wait is one tick long.
        deadline: float | None = None
        while reader.is_alive() or not all(pool.idle() for pool, _ in pools):
            if self._stop_now_requested:
                self._abandon(source, pools, "asked to stop now")
                return
            if deadline is None and self._stop_requested:
                deadline = time.monotonic() + self.shutdown_timeout_s
                logger.info(
                    "Worker %s stopping: no new messages; running what it received (at most %gs)",
                    self.id,
                    self.shutdown_timeout_s,
                )
                source.drain()
            elif deadline is not None and time.monotonic() >= deadline:
                self._abandon(
                    source,
                    pools,
                    f"still running after the shutdown timeout ({self.shutdown_timeout_s:g}s)",
                )
                return
            if reader.is_alive():
                reader.join(SUPERVISE_TICK_S)
            else:
                for pool, _ in pools:
                    pool.wait_idle(SUPERVISE_TICK_S)

    def _abandon(self, source: Source, pools: list[tuple[Pool, bool]], why: str) -> None:
        self.abandoned = True
        not_run = source.abandon()
        for pool, drops_lose in pools:
            dropped = pool.cancel()
            not_run += dropped if drops_lose else 0
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

    def _shutdown(self, pulse: threading.Thread, pools: list[tuple[Pool, bool]]) -> None:
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
                self.client.transport.delete(self._heartbeat_key)
            except BrokerUnavailable as exc:
                logger.debug("Could not remove the heartbeat: %s", exc)
        if not self.abandoned:
            logger.debug("Worker %s: stopping the receivers' threads", self.id)
            for pool, _ in pools:
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
        try:
            self.client.transport.delete(self._heartbeat_key, once_within_s=ABANDON_REDIS_TIMEOUT_S)
        except BrokerUnavailable as exc:
            logger.debug("Could not remove the heartbeat: %s", exc)

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
            "group": None if self.consumer is None else self.consumer.group,
            "signals": [s.name for s in self.signals],
            **self.stats.as_dict(),
        }

    def _write_heartbeat(self, record: str) -> None:
        self.client.transport.put(self._heartbeat_key, record, HEARTBEAT_TTL_S)

    def _pulse(self) -> None:
        # The probe goes first and on its own: a heartbeat write stuck on a dead
        # pooled connection must not delay the check of the subscription.
        while not self._stop.is_set():
            source = self._source
            try:
                if source is not None:
                    source.pulse()
            except BrokerUnavailable as exc:
                logger.debug("Probe not sent: %s", exc)
            except Exception:  # the heartbeat must go on: a silent worker is a dead one
                logger.exception("Worker %s: its source's pulse failed", self.id)
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
