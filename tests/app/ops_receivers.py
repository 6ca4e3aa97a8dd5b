"""A durable signal for the operator's commands: one receiver fails until it is fixed.

Run by ``sigbroker worker -A tests.app.ops_receivers --group NAME``.
``open_invoice`` raises until the file ``$SIGBROKER_TEST_OUT.fixed`` exists
(the test's "deploy of the fix"); ``notify`` always succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sigbroker import Signal, receiver

from .recorder import record

invoice_due = Signal(name="tests.app.ops_receivers.invoice_due", durable=True)


def fixed_flag() -> Path:
    """The file whose existence makes ``open_invoice`` succeed."""
    return Path(os.environ["SIGBROKER_TEST_OUT"] + ".fixed")


@receiver(invoice_due)
def open_invoice(sender: object, **kwargs: Any) -> None:
    if not fixed_flag().exists():
        raise RuntimeError("ledger down")
    record("open_invoice", sender, kwargs=kwargs)


@receiver(invoice_due)
def notify(sender: object, **kwargs: Any) -> None:
    record("notify", sender, kwargs=kwargs)
