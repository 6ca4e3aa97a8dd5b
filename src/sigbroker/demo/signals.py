"""The signals of the demo's small shop, shared by every service that sends or receives them.

Declare them once, import them everywhere: the signal's name on the wire is
``"<module>.<variable>"`` (``sigbroker.demo.signals.order_placed``), so the
sending process and the worker agree on it without any configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from sigbroker import Signal
from sigbroker.codec import register_type


@dataclass(frozen=True)
class User:
    """A user account, as the accounts service shares it with the others."""

    id: int
    username: str
    email: str


class Order:
    """Stands in for the ``Order`` model: the sender of order signals."""


# Any class can travel once both sides register it with the codec: here as [id, username, email].
register_type(User, encode=lambda u: [u.id, u.username, u.email], decode=lambda v: User(*v))

#: A new user signed up (the signal of django-registration, with the same arguments).
user_registered = Signal(providing_args=["user", "request"])

#: Checkout succeeded: ``total`` is a Decimal, ``placed_at`` an aware datetime.
order_placed = Signal(providing_args=["order_id", "total", "placed_at", "items"])

#: The warehouse handed an order to a carrier.
order_shipped = Signal(providing_args=["order_id", "carrier", "tracking"])

#: A payment was refunded: ``payment_id`` is a UUID.
payment_refunded = Signal(providing_args=["payment_id", "amount", "reason"])

#: Used by ``sigbroker demo`` to measure how long delivery takes.
latency_probe = Signal(providing_args=["seq", "sent_at"])
