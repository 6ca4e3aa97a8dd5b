"""Receivers of the test application, run by `sigbroker worker -A tests.app.receivers`."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sigbroker import receiver

from .recorder import record
from .signals import (
    User,
    async_signal,
    backlog,
    block,
    everything,
    flaky,
    many_a,
    many_b,
    slow,
    user_registered,
)


@receiver(user_registered)
def on_any_sender(sender: object, **kwargs: Any) -> None:
    record("on_any_sender", sender, kwargs=kwargs)


@receiver(user_registered, sender=User)
def on_user_class(sender: object, **kwargs: Any) -> None:
    record("on_user_class", sender, kwargs=kwargs)


@receiver(user_registered, sender="billing")
def on_billing_string(sender: object, **kwargs: Any) -> None:
    record("on_billing_string", sender, kwargs=kwargs)


def _uid_receiver(sender: object, **kwargs: Any) -> None:
    record("uid", sender, kwargs=kwargs)


# Connected twice under one dispatch_uid: must run once per message.
user_registered.connect(_uid_receiver, dispatch_uid="the-uid")
user_registered.connect(
    lambda sender, **kw: record("uid", sender, kwargs=kw), weak=False, dispatch_uid="the-uid"
)


@receiver(everything)
def on_everything(sender: object, **kwargs: Any) -> None:
    record("on_everything", sender, kwargs=kwargs)


@receiver([many_a, many_b])
def on_many(sender: object, signal: Any, **kwargs: Any) -> None:
    record("on_many", sender, signal=signal.name, kwargs=kwargs)


@receiver(async_signal)
async def on_async(sender: object, **kwargs: Any) -> None:
    await asyncio.sleep(0)
    record("on_async", sender, kwargs=kwargs)


@receiver(flaky)
def flaky_first(sender: object, **kwargs: Any) -> None:
    raise RuntimeError("flaky receiver failed on purpose")


@receiver(flaky)
def flaky_second(sender: object, **kwargs: Any) -> None:
    record("flaky_second", sender, kwargs=kwargs)


@receiver(slow)
def on_slow(sender: object, seconds: float, token: str, **kwargs: Any) -> None:
    record("slow_started", sender, token=token)
    time.sleep(seconds)
    record("slow_finished", sender, token=token)


@receiver(backlog)
def on_backlog(sender: object, i: int, seconds: float, **kwargs: Any) -> None:
    time.sleep(seconds)
    record("backlog", sender, i=i)


@receiver(block)
def on_block(sender: object, token: str, **kwargs: Any) -> None:
    record("block_started", sender, token=token)
    threading.Event().wait()  # never returns: only an abandoned stop gets past it
