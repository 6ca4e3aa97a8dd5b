"""``sigbroker listen``: decode and print the messages passing on the broker.

A listener is a subscriber like any worker (it counts in ``send``'s return
value while it runs) that calls no receivers: it prints each message, or why
the decoder rejected it.

The ``listen`` command itself is in :mod:`sigbroker.cli.inspection`; it imports
this module only when it runs, because this one imports the client and redis.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..broker import INTERNAL_PREFIX
from ..client import Client
from ..errors import InvalidMessage
from ..transport.base import Done, Handler, Outcome

__all__ = ["Listener", "describe", "to_json"]


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

    Output lines: ``<signal> sender=<ref> key=value ... (age 1.2 ms)``; with
    ``as_json`` one object per line: ``{"signal", "sender", "kwargs", "id",
    "origin", "sent_at", "age_ms"}`` for a message and ``{"channel",
    "rejected"}`` for one the decoder refused.
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
        if signal_names:
            routes = {client.channel(n): self._route(client.channel(n)) for n in signal_names}
            self.source = client.transport.source(routes)
        else:
            self.source = client.transport.source(
                {}, patterns=[self._prefix + "*"], on_pattern=self._on_pattern
            )

    def run(self) -> None:
        """Print messages until ``count`` of them were shown (or forever)."""
        self.source.run()

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
        try:
            envelope = self.client.codec.decode(data)
        except InvalidMessage as exc:
            if self.as_json:
                self.echo(json.dumps({"channel": name, "rejected": str(exc)}))
            else:
                self.echo(f"{name} rejected: {exc}")
            return
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
            }
            self.echo(json.dumps(record))
        else:
            args = " ".join(f"{k}={describe(v)}" for k, v in envelope.kwargs.items())
            self.echo(
                f"{envelope.signal} sender={envelope.sender} {args} (age {age_ms:.1f} ms)".replace(
                    "  ", " "
                )
            )
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.source.stop()
