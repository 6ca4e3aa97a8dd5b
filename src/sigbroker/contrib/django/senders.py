"""Model classes travel as senders by their label: ``sender=Order`` is ``"shop.Order"``.

Django names a model ``"app_label.ModelName"`` in settings, fixtures and
``apps.get_model()``; a service that receives a model signal may not have the
sender's module, but it knows the label. Receivers connected with
``sender=Order`` match messages whose sender is ``"shop.Order"``, and so do
those connected with ``sender="shop.Order"`` where the model is not installed.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from ...naming import qualified_name, set_class_reference

__all__ = ["install", "model_reference"]


def model_reference(cls: type) -> str:
    """A concrete or proxy model's label; ``"module.QualName"`` for any other class."""
    if issubclass(cls, Model):
        model: Any = cls  # django ships no types: its attributes are Any here
        if not model._meta.abstract:
            return str(model._meta.label)
    return qualified_name(cls)


def install() -> None:
    """Reference model senders by label from now on.

    Called when the app's config is created, before any model class exists:
    a receiver connected with ``sender=Order`` records its sender's reference
    when it is connected, possibly in a models module that Django imports
    before this app's ``ready()``.
    """
    set_class_reference(model_reference)
