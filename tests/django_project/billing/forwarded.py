"""Billing's receiver of shop.Order's forwarded post_save (tests/test_django_forwarding.py).

Not a ``receivers`` module, so autodiscovery leaves it out: only the worker
of the forwarding test imports it (``-A billing.forwarded``), and the other
tests' workers do not count these messages.
"""

from shop.models import Order
from tests.app.recorder import record

from sigbroker import receiver
from sigbroker.contrib.django.signals import post_save


@receiver(post_save, sender=Order)
def on_order_saved(sender, instance, created, raw, using, update_fields, **kwargs):
    """Record the saved order as it arrived: an Order instance, built without a query."""
    record(
        "billing.on_order_saved",
        sender,
        instance_type=f"{type(instance).__module__}.{type(instance).__qualname__}",
        pk=instance.pk,
        reference=instance.reference,
        adding=instance._state.adding,
        created=created,
        raw=raw,
        using=using,
        update_fields=update_fields,
    )
