"""What the worker does when an order is created."""

import logging

from orders.models import Order
from orders.signals import order_created

from sigbroker import receiver

logger = logging.getLogger(__name__)


@receiver(order_created, sender=Order)
def notify_customer(sender: type[Order], order: Order, **kwargs: object) -> None:
    """Log the order: it arrived as an Order built from the sent values, no query made."""
    logger.info(
        "Order %s (#%s) created: total %s, at %s (a %s)",
        order.reference,
        order.pk,
        order.total,
        order.created.isoformat(),
        type(order).__name__,
    )
