"""A customer and their orders: a foreign key, a file field and an excluded field."""

from __future__ import annotations

from django.db import models

from sigbroker import Signal, receiver


class Customer(models.Model):
    name = models.CharField(max_length=100)


class Order(models.Model):
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="orders")
    total = models.DecimalField(max_digits=10, decimal_places=2)
    placed_at = models.DateTimeField()
    receipt = models.FileField(upload_to="receipts/", blank=True)
    # Listed in SIGBROKER_EXCLUDE_FIELDS by the tests' settings: never sent.
    internal_note = models.TextField(default="")


class PriorityOrder(Order):
    """A multi-table child: the parent's excluded field stays excluded."""

    level = models.IntegerField(default=1)


# A receiver connected with a model sender while Django imports the models,
# before any app's ready(): it must record the label "store.Order".
order_shipped = Signal(providing_args=["order"])


@receiver(order_shipped, sender=Order)
def on_order_shipped(sender: type, order: object, **kwargs: object) -> None:
    """Connected at import time."""
