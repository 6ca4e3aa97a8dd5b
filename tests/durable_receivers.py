"""Durable signals and receivers: ``sigbroker worker -A tests.durable_receivers --group G``.

The test process imports this module for the signals; a worker imports it for
the receivers. Every receiver call appends one JSON line to the file named by
``$SIGBROKER_TEST_OUT`` (one file per worker process, see tests/helpers.py):
the receiver, the worker's pid and what ``sigbroker.current_message()`` says
(message id, stream entry, group, delivery count), and when, so the test can tell who
ran what, how often, and attribute every duplicate to a process. Each line is
one ``os.write`` on a descriptor opened with ``O_APPEND``: a ``kill -9`` never
leaves half a line, and what was written before it stays in the file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from sigbroker import Signal, current_message, receiver

#: Many messages: the load of the sharing, group and chaos tests. ``work``: seconds per call.
bulk = Signal(providing_args=["i", "work"], durable=True)
#: One receiver fails on the first two deliveries, the other never does.
flaky = Signal(providing_args=["token"], durable=True)
#: One receiver raises every time (unless its worker runs with $DURABLE_POISON_FIXED=1).
poison = Signal(providing_args=["token"], durable=True)
#: On its first delivery the receiver waits until the file ``gate`` exists (or 60 s).
hold = Signal(providing_args=["i", "gate"], durable=True)

#: Longest a held receiver waits for its gate.
HOLD_MAX_S = 60.0

_lock = threading.Lock()
_fd: int | None = None


def _out() -> int:
    global _fd
    with _lock:
        if _fd is None:
            _fd = os.open(os.environ["SIGBROKER_TEST_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return _fd


def record(name: str, **fields: Any) -> None:
    """Append one line: the receiver ``name``, this process, the current message, ``fields``."""
    message = current_message()
    line = {
        "r": name,
        "pid": os.getpid(),
        "id": message.id if message else None,
        "signal": message.signal if message else None,
        "entry": message.entry if message else None,
        "group": message.group if message else None,
        "deliveries": message.deliveries if message else None,
        "t": time.time(),
        **fields,
    }
    os.write(_out(), (json.dumps(line) + "\n").encode())


@receiver(bulk)
def on_bulk(sender: object, i: int, work: float = 0.0, **kwargs: Any) -> None:
    record("on_bulk", i=i)
    if work:
        time.sleep(work)  # the receiver's own work, not synchronisation


@receiver(flaky)
def flaky_fails_twice(sender: object, token: str, **kwargs: Any) -> None:
    message = current_message()
    record("flaky_fails_twice", token=token)
    if message is None or message.deliveries < 3:
        raise RuntimeError(f"flaky receiver fails on delivery {message and message.deliveries}")


@receiver(flaky)
def flaky_other(sender: object, token: str, **kwargs: Any) -> None:
    record("flaky_other", token=token)


@receiver(poison)
def poison_always_raises(sender: object, token: str, **kwargs: Any) -> None:
    record("poison_always_raises", token=token)
    if os.environ.get("DURABLE_POISON_FIXED") != "1":
        raise ValueError(f"poisoned message {token}")


@receiver(poison)
def poison_other(sender: object, token: str, **kwargs: Any) -> None:
    record("poison_other", token=token)


@receiver(hold)
def on_hold(sender: object, i: int, gate: str, **kwargs: Any) -> None:
    message = current_message()
    record("on_hold", i=i)
    if message is not None and message.deliveries == 1:
        deadline = time.monotonic() + HOLD_MAX_S
        path = Path(gate)
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    record("on_hold_done", i=i)
