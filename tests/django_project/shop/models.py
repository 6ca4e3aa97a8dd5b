"""The shop's one model."""

from django.db import models


class Order(models.Model):
    """An order, sent about by shop.signals."""

    reference = models.CharField(max_length=40)
    total = models.DecimalField(max_digits=10, decimal_places=2)
