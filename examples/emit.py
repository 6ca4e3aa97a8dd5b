"""Send the example signals once: ``python -m examples.emit`` (compose's ``emitter``).

The Redis comes from the environment (``SIGBROKER_URL``, else ``REDIS_URL``,
else localhost). Pub/sub delivers only to workers subscribed at that moment,
so this first waits (up to ``--wait`` seconds) for a worker to listen. The
exit code is 1 if some signal reached no worker.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sigbroker import Client, Signal

from .signals import Order, User, order_placed, order_shipped, payment_refunded, user_registered


def samples() -> list[tuple[Signal, object, dict[str, Any]]]:
    """The example sends as ``(signal, sender, arguments)``, with many argument types."""
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


def wait_for_workers(signals: Sequence[Signal], timeout_s: float) -> bool:
    """Wait until every signal's channel has a subscriber; False if ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    with Client() as client:
        wanted = {client.channel(signal) for signal in signals}
        while not wanted <= client.channels().keys():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Wait for a worker, send every sample, print how many workers got each one."""
    parser = argparse.ArgumentParser(prog="python -m examples.emit", description=__doc__)
    parser.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for a worker (default: 30)"
    )
    args = parser.parse_args(argv)
    sends = samples()
    if not wait_for_workers([signal for signal, _, _ in sends], args.wait):
        print(f"No worker listened within {args.wait:g}s; sending anyway", file=sys.stderr)
    missed = 0
    for signal, sender, kwargs in sends:
        count = signal.send(sender=sender, **kwargs)
        print(f"Sent {signal.name} to {count} worker{'' if count == 1 else 's'}", flush=True)
        missed += count == 0
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
