"""``manage.py place_order``: create an order and send ``order_created`` when it commits.

What a view would do, as a command that docker compose can run once. Pub/sub
delivers only to workers subscribed at that moment, so it first waits (up to
``--wait`` seconds) for a worker to listen.
"""

import time
import uuid
from decimal import Decimal
from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from orders.models import Order
from orders.signals import order_created
from sigbroker import Client


def wait_for_worker(timeout_s: float) -> bool:
    """Wait until a worker listens to ``order_created``; False if ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    with Client() as client:  # SIGBROKER_URL and SIGBROKER_NAMESPACE from settings
        channel = client.channel(order_created)
        while channel not in client.channels():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


class Command(BaseCommand):
    help = "Create an order; orders.signals.order_created is published when it commits."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--reference", default=None, help="default: a new one")
        parser.add_argument("--total", type=Decimal, default=Decimal("19.90"))
        parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for a worker")

    def handle(self, *args: Any, **options: Any) -> None:
        if not wait_for_worker(options["wait"]):
            self.stderr.write(f"No worker listened within {options['wait']:g}s; sending anyway")
        reference = options["reference"] or f"EX-{uuid.uuid4().hex[:8].upper()}"
        with transaction.atomic():
            order = Order.objects.create(reference=reference, total=options["total"])
            # Not published yet: a worker must not hear of a row it cannot read.
            order_created.send_on_commit(sender=Order, order=order)
        self.stdout.write(f"Created order {order.reference} (#{order.pk}); order_created sent")
