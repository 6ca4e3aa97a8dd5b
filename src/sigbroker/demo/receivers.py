"""What the other services of the demo's shop do when its signals arrive.

Run them in a worker (``sigbroker demo`` does)::

    sigbroker worker -A sigbroker.demo.receivers

Receivers are written exactly as for ``django.dispatch``; here they only print
what they received (with ``repr``, so the types that crossed the wire show).
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from sigbroker import receiver

from .signals import (
    Order,
    User,
    latency_probe,
    order_placed,
    order_shipped,
    payment_refunded,
    user_registered,
)


def show(headline: str, **values: Any) -> None:
    """Print a headline, then one indented ``name = repr(value)`` line per value."""
    lines = [headline, *(f"    {name} = {value!r}" for name, value in values.items())]
    print("\n".join(lines), flush=True)


@receiver(user_registered)
def send_welcome_email(sender: object, user: User, request: dict[str, str], **kwargs: Any) -> None:
    """Any sender: runs for every new user."""
    show(f"user_registered: welcome email to {user.email}", user=user, request=request)


@receiver(order_placed, sender=Order)
def reserve_stock(
    sender: type[Order],
    order_id: int,
    total: Decimal,
    placed_at: datetime,
    items: list[dict[str, Any]],
    **kwargs: Any,
) -> None:
    """Only for orders sent by ``Order``: the worker passes the class itself as ``sender``."""
    show(
        f"order_placed by {sender.__name__}: reserving stock for order #{order_id}",
        total=total,
        placed_at=placed_at,
        items=items,
    )


@receiver(order_shipped, sender="warehouse")
def email_tracking_number(
    sender: str, order_id: int, carrier: str, tracking: str, **kwargs: Any
) -> None:
    """A string sender works too: this one only hears the warehouse."""
    show(f"order_shipped by {sender}: {carrier} tracking {tracking} mailed for order #{order_id}")


@receiver(payment_refunded)
async def notify_accounting(
    sender: object, payment_id: UUID, amount: Decimal, reason: str, **kwargs: Any
) -> None:
    """Async receivers run on the worker's event loop (think of an httpx call here)."""
    await asyncio.sleep(0)
    show(f"payment_refunded: accounting notified ({reason})", payment_id=payment_id, amount=amount)


@receiver(latency_probe)
def report_latency(sender: object, seq: int, sent_at: float, **kwargs: Any) -> None:
    """Print the time from ``send()`` to this call; sender and worker share one clock."""
    print(f"latency seq={seq} ms={(time.time() - sent_at) * 1000:.3f}", flush=True)
