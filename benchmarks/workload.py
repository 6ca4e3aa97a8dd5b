"""What every figure sends: one 5-argument payload, its signals, and its raw equivalent.

The payload carries the types a real signal carries (int, str, float, an aware
datetime, a Decimal). The raw redis-py side sends the same values as a msgpack
dict and, to stay fair, encodes per call too: datetime and Decimal become
strings (``isoformat()``, ``str()``), the cheapest a hand-written publisher does.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import msgpack

from sigbroker import Signal

#: Namespace of the worker-side figures (the sigbroker worker subscribes here).
NAMESPACE = "bench"
#: Namespace of the send-cost figures: nobody subscribes, PUBLISH returns 0.
SEND_NAMESPACE = "bench-send"
#: Raw redis-py channels, mirroring the sigbroker ones.
RAW_PAYLOAD_CHANNEL = "raw:payload"
RAW_LATENCY_CHANNEL = "raw:latency"
RAW_SEND_CHANNEL = "raw-send:payload"


class Order:
    """The sender of the benchmark's signals: a model class, as in Django."""


#: What a class sender becomes on the wire (DESIGN section 2: ``"module.QualName"``).
ORDER_REFERENCE = f"{Order.__module__}.{Order.__qualname__}"

ARGUMENTS = ["order_id", "customer", "score", "placed_at", "total"]

#: The signal of the cost and throughput figures (no ``providing_args``).
payload_signal = Signal(name="benchmarks.payload")
#: The same signal with declared arguments (``send`` checks them).
declared_signal = Signal(providing_args=ARGUMENTS, name="benchmarks.declared")
#: The signal of the latency figure (its receiver acknowledges each message).
latency_signal = Signal(name="benchmarks.latency")

_PLACED_AT = datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=2)))


def payload(order_id: int = 7) -> dict[str, Any]:
    """The 5 keyword arguments of one message (``order_id`` varies, to tell messages apart)."""
    return {
        "order_id": order_id,
        "customer": "alice@example.com",
        "score": 0.875,
        "placed_at": _PLACED_AT,
        "total": Decimal("1249.90"),
    }


def raw_dict(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The payload as a hand-written publisher would send it: msgpack-native values only."""
    return {
        "order_id": kwargs["order_id"],
        "customer": kwargs["customer"],
        "score": kwargs["score"],
        "placed_at": kwargs["placed_at"].isoformat(),
        "total": str(kwargs["total"]),
    }


def raw_message(kwargs: dict[str, Any]) -> bytes:
    """Encode the payload the raw way (a fresh ``packb`` per call, as a raw publisher does)."""
    data: bytes = msgpack.packb(raw_dict(kwargs))
    return data


def channel(signal: Signal, namespace: str) -> str:
    """The channel a signal travels on (DESIGN section 3: ``{namespace}:{signal name}``)."""
    return f"{namespace}:{signal.name}"
