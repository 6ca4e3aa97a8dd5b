"""The Redis transport: PUBLISH with group commit, SUBSCRIBE with a probe; streams.

Broadcast and at-most-once: every worker subscribed to a channel gets each
message published on it while it is subscribed; the sequence numbers in the
envelope let a worker count what it missed. The parts: :mod:`.redis_endpoint`
(the URL, connections, retries, error translation), :mod:`.redis_publisher`
(pre-framed PUBLISH, group commit, asyncio) and :mod:`.redis_subscription`
(the reader). Durable signals go through the same publisher to streams, and
are read by :mod:`.redis_streams`' consumer. Every redis-py exception is
translated into sigbroker's own here, at the boundary, and its text scrubbed
of the URL's secrets.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio

from ..durable import ConsumerOptions
from ..stats import Stats
from . import redis_endpoint
from .base import (
    Destination,
    DurableRoute,
    Handler,
    PatternHandler,
    Source,
    Transport,
    reset_after_fork,
)
from .redis_endpoint import Endpoint
from .redis_publisher import Publisher, append_command, apublish, frame, publish_command
from .redis_subscription import Subscription

__all__ = ["RedisPubSub"]

T = TypeVar("T")

# asyncio clients inherited by a forked child: never used there, and kept
# alive so that their finalizers do not act on the parent's transports.
_INHERITED: list[object] = []


class RedisPubSub(Transport):
    """Signals as Redis PUBLISH/SUBSCRIBE on ``url`` (``redis://``, ``rediss://``, ``unix://``).

    The timeouts and retries bound every command (see
    :class:`~sigbroker.client.Client`); ``use_hiredis`` picks the reply
    reader (default: hiredis when it imports).
    """

    def __init__(
        self,
        url: str,
        *,
        use_hiredis: bool | None = None,
        **options: Any,
    ) -> None:
        self.endpoint = Endpoint(url, **options)
        self.display = self.endpoint.display
        self.server = self.endpoint.server
        self.use_hiredis = (
            (redis_endpoint.hiredis is not None) if use_hiredis is None else use_hiredis
        )
        self._commands: dict[Destination, bytes] = {}
        self._publisher = Publisher(self.endpoint, use_hiredis=self.use_hiredis)
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
            weakref.WeakKeyDictionary()
        )
        reset_after_fork(self)

    def __repr__(self) -> str:
        return f"<RedisPubSub {self.display}>"

    def _command(self, channel: Destination) -> bytes:
        # The PUBLISH (or a stream's append) up to the message, framed once per destination.
        command = self._commands.get(channel)
        if command is None:
            if isinstance(channel, str):
                command = publish_command(channel)
            else:
                command = append_command(channel)
            self._commands[channel] = command
        return command

    # -- publishing -----------------------------------------------------------

    def publish(self, channel: Destination, data: bytes) -> int:
        """Publish one message; return how many subscribers (a stream: groups) will get it."""
        count: int = self._publisher.publish(frame(self._command(channel), data))
        return count

    def publish_many(self, messages: Sequence[tuple[Destination, bytes]]) -> list[int]:
        """Publish messages as one pipeline; BatchRefused if Redis refused some."""
        if not messages:
            return []
        command = self._command
        frames = b"".join(frame(command(channel), data) for channel, data in messages)
        counts: list[int] = self._publisher.publish(frames, len(messages), many=True)
        return counts

    async def apublish(self, channel: Destination, data: bytes) -> int:
        """Publish one message on ``redis.asyncio``, in the running loop."""
        pool = self._async_redis().connection_pool
        return await apublish(self.endpoint, pool, frame(self._command(channel), data))

    def _async_redis(self) -> redis.asyncio.Redis:
        # An asyncio connection belongs to the loop that opened it.
        loop = asyncio.get_running_loop()
        conn = self._async.get(loop)
        if conn is None:
            conn = redis.asyncio.Redis.from_url(self.endpoint.url, **self.endpoint.options)
            self._async[loop] = conn
        return conn

    async def aclose(self) -> None:
        """Close the asyncio connections of the running loop."""
        conn = self._async.pop(asyncio.get_running_loop(), None)
        if conn is not None:
            await conn.aclose()

    # -- receiving ------------------------------------------------------------

    def source(
        self,
        routes: Mapping[str, Handler],
        *,
        stats: Stats | None = None,
        probe: str | None = None,
        patterns: Sequence[str] = (),
        on_pattern: PatternHandler | None = None,
    ) -> Subscription:
        """A subscription to ``routes``' channels (and ``patterns``), read by its own loop."""
        return Subscription(
            self.endpoint,
            self.publish,
            routes,
            probe=probe,
            patterns=patterns,
            on_pattern=on_pattern,
            use_hiredis=self.use_hiredis,
            stats=stats,
        )

    def stream_source(
        self,
        routes: Mapping[str, DurableRoute],
        *,
        options: ConsumerOptions,
        consumer: str,
        namespace: str,
        alive_key: Callable[[str], str],
        stats: Stats,
    ) -> Source:
        """The durable signals' streams of ``routes``, read in a consumer group."""
        from .redis_streams import StreamConsumer  # only a worker with durable signals needs it

        return StreamConsumer(
            self.endpoint,
            routes,
            options=options,
            consumer=consumer,
            namespace=namespace,
            alive_key=alive_key,
            stats=stats,
            use_hiredis=self.use_hiredis,
        )

    # -- keys and the operator's view -----------------------------------------

    def put(self, key: str, value: str, ttl_s: float) -> None:
        """SET with an expiry (retried: safe to run twice)."""
        self.endpoint.call(lambda r: r.set(key, value, px=int(ttl_s * 1000)))

    def delete(self, key: str, *, once_within_s: float | None = None) -> None:
        """DEL, retried; or one attempt on a connection of its own bounded by ``once_within_s``."""
        if once_within_s is None:
            self.endpoint.call(lambda r: r.delete(key))
            return
        conn: Any = None
        try:
            conn = self.endpoint.connect(timeout_s=once_within_s)
            conn.send_command("DEL", key)
            conn.read_response()
        except (redis.RedisError, OSError) as exc:
            raise self.endpoint.unavailable(exc, 1) from exc
        finally:
            if conn is not None:
                conn.disconnect()

    def values(self, pattern: str) -> list[bytes]:
        """SCAN for ``pattern``, then MGET; keys that expired meanwhile are left out."""

        def read(r: redis.Redis) -> list[Any]:
            keys = sorted(r.scan_iter(match=pattern, count=500))
            return list(r.mget(keys)) if keys else []

        return [v for v in self.endpoint.call(read) if v is not None]

    def channels(self, pattern: str) -> dict[str, int]:
        """PUBSUB CHANNELS and NUMSUB of the channels that match ``pattern``."""

        def query(r: redis.Redis) -> dict[str, int]:
            names = sorted(_text(c) for c in r.pubsub_channels(pattern))
            if not names:
                return {}
            return {_text(c): int(n) for c, n in r.pubsub_numsub(*names)}

        return self.endpoint.call(query)

    def ping(self) -> None:
        """One PING."""
        self.endpoint.call(lambda r: r.ping())

    def server_info(self) -> dict[str, Any]:
        """Redis's INFO server section (version, mode, uptime...)."""
        info: dict[str, Any] = self.endpoint.call(lambda r: r.info("server"))
        return info

    def setting(self, name: str) -> str | None:
        """``CONFIG GET name`` (BrokerUnavailable if refused: managed Redis often does)."""
        found: Any = self.endpoint.call(lambda r: r.config_get(name))
        value = found.get(name)
        return None if value is None else str(value)

    def call(self, fn: Callable[[redis.Redis], T]) -> T:
        """Run ``fn(redis_client)`` within the retry budget (``fn`` must be safe to run twice)."""
        return self.endpoint.call(fn)

    def scrub(self, text: str) -> str:
        """``text`` with the URL masked and its secrets hidden."""
        return self.endpoint.scrub(text)

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        self._publisher.close()
        self.endpoint.pool.disconnect()
        # asyncio connections can only be closed on the loop that opened them
        # (see aclose); dropping them lets that loop's transports close them.
        self._async.clear()

    def _after_fork(self) -> None:
        """In a forked child: the parent's connections, locks and queues are replaced."""
        self._publisher._after_fork()
        self.endpoint.after_fork()
        _INHERITED.extend(self._async.values())
        self._async = weakref.WeakKeyDictionary()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
