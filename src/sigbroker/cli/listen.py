"""``sigbroker listen``: decode and print the messages passing on the broker.

A listener is a subscriber like any worker (it counts in ``send``'s return
value while it runs) that calls no receivers: it prints each message, or why
the decoder rejected it. It also tails the streams of durable signals (the
new entries, with ``XREAD`` and no consumer group, so it takes nothing from
the groups' workers and does not count in ``send``'s return value), and
prints their messages the same way.

The ``listen`` command itself is in :mod:`sigbroker.cli.inspection`; it imports
this module only when it runs, because this one imports the client and redis.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..broker import INTERNAL_PREFIX
from ..client import Client
from ..errors import InvalidMessage
from ..transport.base import Done, Handler, Outcome
from ..transport.redis_streams_admin import durable_streams, read_streams, stream_positions

__all__ = ["STREAM_BLOCK_MS", "STREAM_RESCAN_S", "Listener", "describe", "to_json"]

#: Longest one read of the durable streams waits before the listener checks its stop flag.
STREAM_BLOCK_MS = 1000
#: Stream entries taken per read.
STREAM_READ_ENTRIES = 100
#: How often a listener of a whole namespace looks for durable streams created since it started.
STREAM_RESCAN_S = 5.0


def to_json(value: Any) -> Any:
    """A JSON-friendly form of a decoded argument (for ``--json`` output)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [to_json(v) for v in items]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


def describe(value: Any) -> str:
    """A short, readable form of one decoded argument."""
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


class Listener:
    """Subscribes to some signals (or all of a namespace) and prints what passes.

    Output lines: ``<signal> sender=<ref> key=value ... (age 1.2 ms)``, and
    ``(entry <id>, age 1.2 ms)`` for a durable signal's message; with
    ``as_json`` one object per line: ``{"signal", "sender", "kwargs", "id",
    "origin", "sent_at", "age_ms", "entry"}`` for a message (``entry``: the
    stream entry id, None for pub/sub) and ``{"channel", "rejected"}`` for
    one the decoder refused (``channel``: the stream for a durable signal).
    The streams are read in a thread of their own; the output and the count
    are shared.
    """

    def __init__(
        self,
        client: Client,
        signal_names: Sequence[str] = (),
        *,
        as_json: bool = False,
        count: int | None = None,
        echo: Callable[[str], Any] = print,
    ) -> None:
        self.client = client
        self.as_json = as_json
        self.remaining = count
        self.echo = echo
        self._prefix = f"{client.namespace}:"
        self._signal_names = tuple(signal_names)
        self._lock = threading.Lock()  # one message printed (and counted) at a time
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        if signal_names:
            routes = {client.channel(n): self._route(client.channel(n)) for n in signal_names}
            self.source = client.transport.source(routes)
        else:
            self.source = client.transport.source(
                {}, patterns=[self._prefix + "*"], on_pattern=self._on_pattern
            )

    def run(self) -> None:
        """Print messages until ``count`` of them were shown (or forever).

        Raises what stopped the reading of the streams (Redis gone, say).
        """
        tail = None
        if getattr(self.client.transport, "call", None) is not None:  # streams live in Redis
            positions = self.client.call(
                lambda r: stream_positions(r, self.client.namespace, self._signal_names)
            )
            tail = threading.Thread(
                target=self._tail, args=(positions,), name="sigbroker-listen-streams", daemon=True
            )
            tail.start()
        try:
            self.source.run()
        finally:
            self._stopping.set()
            if tail is not None:
                tail.join(timeout=2 * STREAM_BLOCK_MS / 1000)
        if self._failure is not None:
            raise self._failure

    def _tail(self, positions: dict[str, str]) -> None:
        # Read the streams from where they ended when the listener started;
        # a stream found later holds only entries added since then.
        try:
            rescan_at = time.monotonic() + STREAM_RESCAN_S
            while not self._stopping.is_set():
                self._read_streams(positions)
                if not self._signal_names and time.monotonic() >= rescan_at:
                    rescan_at = time.monotonic() + STREAM_RESCAN_S
                    for key in self.client.call(
                        lambda r: durable_streams(r, self.client.namespace)
                    ):
                        positions.setdefault(key, "0-0")
        except Exception as exc:
            self._failure = exc
            self.source.stop()

    def _read_streams(self, positions: dict[str, str]) -> None:
        if not positions:
            self._stopping.wait(STREAM_BLOCK_MS / 1000)
            return
        entries = self.client.call(
            lambda r: read_streams(
                r, positions, block_ms=STREAM_BLOCK_MS, count=STREAM_READ_ENTRIES
            )
        )
        for key, entry_id, data in entries:
            positions[key] = entry_id
            if data is not None:
                self._show(key, data, entry_id)

    def _route(self, channel: str) -> Handler:
        raw = channel.encode()

        def route(data: bytes, done: Done | None = None) -> Outcome | None:
            self._on_pattern(raw, data)
            return None

        return route

    def _on_pattern(self, channel: bytes, data: bytes) -> None:
        name = channel.decode(errors="replace")
        if name[len(self._prefix) :].startswith(INTERNAL_PREFIX):
            return
        self._show(name, data, None)

    def _show(self, name: str, data: bytes, entry: str | None) -> None:
        # One message, from a channel or (with its entry id) a stream.
        with self._lock:
            if self.remaining is not None and self.remaining <= 0:
                return  # the other reader reached the count first
            if not self._print(name, data, entry):
                return  # a rejected message does not count
            if self.remaining is not None:
                self.remaining -= 1
                if self.remaining <= 0:
                    self._stopping.set()
                    self.source.stop()

    def _print(self, name: str, data: bytes, entry: str | None) -> bool:
        # Print one message, or why it was rejected; return whether it was valid.
        try:
            envelope = self.client.codec.decode(data)
        except InvalidMessage as exc:
            if self.as_json:
                self.echo(json.dumps({"channel": name, "rejected": str(exc)}))
            else:
                self.echo(f"{name} rejected: {exc}")
            return False
        age_ms = (time.time() - envelope.sent_at) * 1000
        if self.as_json:
            record = {
                "signal": envelope.signal,
                "sender": envelope.sender,
                "kwargs": to_json(envelope.kwargs),
                "id": envelope.id,
                "origin": envelope.origin,
                "sent_at": envelope.sent_at,
                "age_ms": round(age_ms, 3),
                "entry": entry,
            }
            self.echo(json.dumps(record))
        else:
            args = " ".join(f"{k}={describe(v)}" for k, v in envelope.kwargs.items())
            where = "" if entry is None else f"entry {entry}, "
            line = f"{envelope.signal} sender={envelope.sender} {args} ({where}age {age_ms:.1f} ms)"
            self.echo(line.replace("  ", " "))
        return True
