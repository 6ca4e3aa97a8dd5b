"""Figure 9's models: an ``Order`` of six fields besides its pk, one a foreign key."""

from __future__ import annotations

from django.db import models


class Customer(models.Model):
    """What the order's foreign key points at (sent as ``customer_id``, never loaded)."""

    email = models.EmailField()

    class Meta:
        app_label = "django_shop"


class Order(models.Model):
    """The model instance the figure sends."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE)
    reference = models.CharField(max_length=32)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    placed_at = models.DateTimeField()
    paid = models.BooleanField(default=False)
    quantity = models.IntegerField()

    class Meta:
        app_label = "django_shop"
