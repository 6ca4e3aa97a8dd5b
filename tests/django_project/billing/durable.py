"""A durable signal of the billing service, loaded only with ``-A billing.durable``.

Autodiscovery imports ``signals`` and ``receivers`` modules only, so the
project's pub/sub workers (started without ``--group``) never see it.
"""

from shop.models import Order
from tests.app.recorder import record

from sigbroker import Signal, current_message, receiver

invoice_due = Signal(providing_args=["order"], name="billing.durable.invoice_due", durable=True)


@receiver(invoice_due, sender=Order)
def open_invoice(sender, order, **kwargs):
    """Record the order as it arrived (a model instance) and the delivery."""
    message = current_message()
    record(
        "billing.open_invoice",
        sender,
        order_pk=order.pk,
        reference=order.reference,
        is_instance=isinstance(order, Order),
        group=message.group if message else None,
        deliveries=message.deliveries if message else None,
    )
