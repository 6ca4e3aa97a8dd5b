"""Signals of the test application (imported by the test process and the worker)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sigbroker import Signal
from sigbroker.codec import register_type

user_registered = Signal(providing_args=["user", "request"])
everything = Signal()
many_a = Signal()
many_b = Signal()
async_signal = Signal()
slow = Signal(providing_args=["seconds", "token"])
flaky = Signal()
unheard = Signal()
# Warm-stop tests: a backlog of short receivers, and a receiver that never returns.
backlog = Signal(providing_args=["i", "seconds"])
block = Signal(providing_args=["token"])


class User:
    """A sender class that both processes know."""


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


@dataclass(frozen=True)
class Money:
    """A user type registered with the codec in both processes."""

    amount: int
    currency: str


register_type(Color)
register_type(Money, lambda m: [m.amount, m.currency], lambda v: Money(v[0], v[1]))
