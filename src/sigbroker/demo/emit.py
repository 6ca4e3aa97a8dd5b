"""The demo's sample sends: one message of each shop signal, with many argument types.

``sigbroker demo`` sends them from its own process; ``examples/emit.py``
(docker compose's emitter) sends them with ``Signal.send``.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sigbroker import Signal

from .signals import Order, User, order_placed, order_shipped, payment_refunded, user_registered

__all__ = ["samples"]


def samples() -> list[tuple[Signal, object, dict[str, Any]]]:
    """The sample sends as ``(signal, sender, arguments)``, with many argument types."""
    placed_at = datetime.now(timezone.utc).replace(microsecond=0)
    return [
        (
            user_registered,
            "accounts",
            {
                "user": User(id=42, username="ada", email="ada@example.com"),
                "request": {"ip": "203.0.113.7", "path": "/accounts/register/"},
            },
        ),
        (
            order_placed,
            Order,
            {
                "order_id": 1001,
                "total": Decimal("59.80"),
                "placed_at": placed_at,
                "items": [
                    {"sku": "MUG-01", "qty": 2, "price": Decimal("12.90")},
                    {"sku": "TEE-M", "qty": 1, "price": Decimal("34.00")},
                ],
            },
        ),
        (order_shipped, "warehouse", {"order_id": 1001, "carrier": "DHL", "tracking": "JD0146"}),
        (
            payment_refunded,
            "payments",
            {
                "payment_id": uuid.UUID("6f1c2a52-3d4e-4b8a-9c1f-2b7d5e8a9f10"),
                "amount": Decimal("12.90"),
                "reason": "mug arrived broken",
            },
        ),
    ]
