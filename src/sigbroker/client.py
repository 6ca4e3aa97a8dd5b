"""The sending side: validate, encode and publish signals over a transport.

A :class:`Client` turns ``send(signal, sender, **kwargs)`` into one encoded
message published on ``"{namespace}:{signal name}"`` and returns how many
workers received it; a durable signal's message is appended to the stream
``"{namespace}:stream:{signal name}"`` instead, and the count is of the
consumer groups (services) that will process it. It speaks only to a
:class:`~sigbroker.transport.Transport`: by default Redis on its URL
(:class:`~sigbroker.transport.redis_pubsub.RedisPubSub`, where the bounds,
retries and error translation are), or any transport given
(``sigbroker.testing`` gives an in-memory one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .codec import DEFAULT_LIMITS, Codec, Limits
from .config import SecretSetting, normalize_secrets, settings
from .durable import stream_key
from .errors import ConfigurationError
from .naming import SignalLike, sender_reference
from .transport.base import Destination, Stream, Transport
from .transport.redis_endpoint import (
    CONNECT_TIMEOUT_S,
    SEND_RETRIES,
    SEND_TIMEOUT_S,
    SOCKET_TIMEOUT_S,
)
from .transport.redis_pubsub import RedisPubSub
from .urls import mask_url

__all__ = ["Batch", "Client", "mask_url"]

SignalRef = SignalLike | str
T = TypeVar("T")


class Client:
    """A connection to the broker that publishes signals.

    ``url`` defaults to the configured one (``SIGBROKER_URL``, ``REDIS_URL``,
    ``redis://localhost:6379/0``); ``rediss://`` URLs, passwords and ACL users
    work as in redis-py. ``secret`` signs every message (a list rotates keys:
    the first signs). A connection error is retried up to ``retries`` times
    with a short backoff within ``timeout_s``; a send raises
    :class:`BrokerUnavailable` at the latest after ``timeout_s +
    connect_timeout_s + 2 * socket_timeout_s`` (one round trip: 22 s with the
    defaults), or three times that when it is queued behind other threads'
    sends (66 s). A send whose command was written but not answered raises
    :class:`DeliveryUnknown` and is not retried. ``transport`` replaces
    Redis (the URL and its options are then unused). Thread-safe: share one
    client per process. Fork-safe: a child forked after the client was used
    (gunicorn ``--preload``, multiprocessing) opens its own connections.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str | None = None,
        secret: SecretSetting = None,
        timeout_s: float = SEND_TIMEOUT_S,
        retries: int = SEND_RETRIES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        socket_timeout_s: float = SOCKET_TIMEOUT_S,
        max_connections: int | None = None,
        limits: Limits = DEFAULT_LIMITS,
        transport: Transport | None = None,
    ) -> None:
        env = settings()
        self.url = url if url is not None else env.url
        self.namespace = namespace if namespace is not None else env.namespace
        secrets = normalize_secrets(secret) if secret is not None else env.secrets
        self.codec = Codec(secrets, limits)
        if transport is None:
            transport = RedisPubSub(
                self.url,
                timeout_s=timeout_s,
                retries=retries,
                connect_timeout_s=connect_timeout_s,
                socket_timeout_s=socket_timeout_s,
                max_connections=max_connections,
            )
        self.transport = transport
        self._prefix = f"{self.namespace}:"
        self._channels: dict[str, str] = {}
        self._destinations: dict[SignalLike, Destination] = {}
        # Sequence numbers count per server and channel: the workers of each
        # server see only what was published there.
        self._sequence_keys: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Client {self.transport.display} namespace={self.namespace!r}>"

    # -- naming ---------------------------------------------------------------

    def channel(self, signal: SignalRef) -> str:
        """Return the channel that carries ``signal`` (a Signal or a signal name).

        For a durable signal, the key of its stream.
        """
        destination = self.destination(signal)
        return destination if isinstance(destination, str) else destination.key

    def destination(self, signal: SignalRef) -> Destination:
        """Where ``signal`` goes: its pub/sub channel, or its stream if it is durable."""
        if type(signal) is str:
            channel = self._channels.get(signal)
            if channel is None:
                channel = self._channels[signal] = self._prefix + signal
            return channel
        assert not isinstance(signal, str)
        found = self._destinations.get(signal)
        if found is None:
            if getattr(signal, "durable", False):
                maxlen: int = getattr(signal, "maxlen")  # noqa: B009 - a Signal's, typed here
                found = Stream(stream_key(self.namespace, signal.name), maxlen)
            else:
                found = self.destination(signal.name)
            self._destinations[signal] = found
        return found

    def encode(self, signal: SignalRef, sender: object, kwargs: Mapping[str, Any]) -> bytes:
        """Check and encode one message; raises PayloadError and publishes nothing.

        Its sequence number counts on the signal's channel of this client's
        Redis server, as the workers that subscribe to that channel there see
        them: two clients of one namespace on two servers count apart.
        """
        if type(signal) is str:
            return self.codec.pack(
                signal, sender_reference(sender), kwargs, self._sequence_key(signal)
            )
        assert not isinstance(signal, str)
        if signal.providing_args is not None:
            signal.validate(kwargs)
        name = signal.name
        return self.codec.pack(name, sender_reference(sender), kwargs, self._sequence_key(name))

    def _sequence_key(self, name: str) -> str:
        # What the process's sequence counter of signal ``name`` is kept under.
        key = self._sequence_keys.get(name)
        if key is None:
            key = self._sequence_keys[name] = f"{self.transport.server} {self.channel(name)}"
        return key

    # -- sending --------------------------------------------------------------

    def send(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Publish one signal; return how many workers received it.

        A durable signal is appended to its stream: the count is of the
        consumer groups that will process it (0 when no service consumes it
        yet; it is kept within the stream's retention all the same).
        Raises :class:`PayloadError` (nothing published) for a payload that
        does not encode or breaks ``providing_args``, and
        :class:`BrokerUnavailable` when Redis can not be reached in time.
        When other threads are sending through this client at the same moment,
        their messages and this one travel together in one pipeline.
        """
        return self.transport.publish(self.destination(signal), self.encode(signal, sender, kwargs))

    def publish(self, channel: Destination, data: bytes) -> int:
        """Publish raw bytes on a channel or stream (for tools and tests); return the count."""
        return self.transport.publish(channel, data)

    def batch(self) -> Batch:
        """Collect many sends and publish them in one round trip on exit.

        ::

            with client.batch() as batch:
                for order in orders:
                    batch.send(order_placed, sender=Order, order_id=order.id)
            batch.results  # one receiver count per send, in order
        """
        return Batch(self)

    async def asend(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> int:
        """Like :meth:`send`, for use inside an event loop.

        Getting a healthy connection is retried; once the command is being
        written, an error raises :class:`DeliveryUnknown` and nothing is
        retried. Cancelling it (``asyncio.wait_for``, say) once the command is
        being written closes its connection, so no later send reads this one's
        reply.
        """
        data = self.encode(signal, sender, kwargs)
        return await self.transport.apublish(self.destination(signal), data)

    async def aclose(self) -> None:
        """Close the asyncio connections of the running loop; call before the loop ends."""
        await self.transport.aclose()

    # -- inspection -----------------------------------------------------------

    def ping(self) -> float:
        """Round-trip one PING; return the time it took in seconds."""
        start = time.perf_counter()
        self.transport.ping()
        return time.perf_counter() - start

    def server_info(self) -> dict[str, Any]:
        """Return what the server says of itself (Redis's INFO server section)."""
        return self.transport.server_info()

    def channels(self) -> dict[str, int]:
        """Return the live channels of this namespace and their subscriber counts."""
        return self.transport.channels(self._prefix + "*")

    def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(redis_client)`` within the retry bound, redis-py's errors translated.

        For tools on a Redis transport: connection errors are retried, so
        ``fn`` must be safe to run twice (reads, ``SET`` of a key, ``DEL``).
        Raises :class:`ConfigurationError` on a transport without Redis.
        """
        call = getattr(self.transport, "call", None)
        if call is None:
            raise ConfigurationError(f"{self.transport.display} has no Redis client to call")
        result: T = call(fn)
        return result

    # -- lifecycle ------------------------------------------------------------

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Batch:
    """Sends collected by :meth:`Client.batch`, published as one pipeline on exit.

    Each ``send`` is checked and encoded at once, so a bad payload raises
    :class:`PayloadError` at the call and is never queued. ``results`` holds the
    receiver count of each send once the block exits. If the block raises,
    nothing is published.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self._queued: list[tuple[Destination, bytes]] = []
        self.results: list[int] = []

    def send(self, signal: SignalRef, sender: object = None, **kwargs: Any) -> None:
        """Queue one signal for publishing when the batch ends."""
        data = self.client.encode(signal, sender, kwargs)
        self._queued.append((self.client.destination(signal), data))

    def __len__(self) -> int:
        return len(self._queued)

    def flush(self) -> list[int]:
        """Publish everything queued in one round trip; return the receiver counts.

        If Redis refuses some of the messages (an ACL that forbids one
        channel, say) and runs the others, raises :class:`BatchRefused`,
        whose ``results`` hold each message's count or the error of its
        refusal, in order: resend only the refused ones. ``results`` of the
        batch then gets nothing. The messages are never all retried.
        """
        queued, self._queued = self._queued, []
        if not queued:
            return []
        counts = self.client.transport.publish_many(queued)
        self.results.extend(counts)
        return counts

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._queued.clear()
