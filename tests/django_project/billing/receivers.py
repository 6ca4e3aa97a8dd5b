"""Billing's receivers: they record what they get and what the database shows them.

Each record goes to the file named by ``SIGBROKER_TEST_OUT`` (tests/app/recorder.py).
``SIGBROKER_TEST_BROKEN_RECEIVERS=1`` makes this module fail to import, as a
typo would: autodiscovery must raise, not skip it.
"""

import os

from django.db import connection
from shop.models import Order
from shop.signals import marker, order_cancelled, order_placed
from tests.app.recorder import record

from sigbroker import receiver

if os.environ.get("SIGBROKER_TEST_BROKEN_RECEIVERS") == "1":
    import no_such_module_for_the_test  # noqa: F401


def _backend_pid():
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


@receiver(order_placed)
def on_order_placed(sender, order_id, reference, total, **kwargs):
    """Record the order and whether its row is visible to this process."""
    row = Order.objects.filter(pk=order_id).values("reference", "total").first()
    record(
        "billing.on_order_placed",
        sender,
        order_id=order_id,
        reference=reference,
        total=str(total),
        row_exists=row is not None,
        row_reference=row["reference"] if row else None,
        orders=Order.objects.count(),
        backend_pid=_backend_pid(),
    )


@receiver(order_cancelled)
def on_order_cancelled(sender, order_id, **kwargs):
    """Record the cancellation."""
    record("billing.on_order_cancelled", sender, order_id=order_id)


@receiver(marker)
def on_marker(sender, label, **kwargs):
    """Record the marker, with this process's database backend (PostgreSQL only)."""
    record("billing.on_marker", sender, label=label, backend_pid=_backend_pid())
