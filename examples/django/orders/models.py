"""An order."""

from django.db import models


class Order(models.Model):
    """Sent whole in ``order_created``: it arrives in the worker as an Order, without a query."""

    reference = models.CharField(max_length=40, unique=True)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField(auto_now_add=True)
