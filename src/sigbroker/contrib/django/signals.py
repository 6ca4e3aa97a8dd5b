"""Ready-made mirrors of Django's model signals, for receiving them from another service.

A service that forwards ``post_save`` (``SIGBROKER_FORWARD``, see
:mod:`sigbroker.contrib.django.forward`) publishes it on a sigbroker signal
named ``"django.db.models.signals.post_save"``; receivers elsewhere connect
to it here::

    from sigbroker import receiver
    from sigbroker.contrib.django.signals import post_save

    @receiver(post_save, sender="shop.Order")   # or sender=Order where shop is installed
    def on_order_saved(sender, instance, created, **kwargs): ...

Each is ``remote_signal(<Django's dotted name>)``: the same objects that
:func:`~sigbroker.contrib.django.remote_signal` returns for those names.
Receivers get the Django signal's keyword arguments (never ``signal``'s
Django object: ``signal`` is the mirror, as for any sigbroker receiver).
"""

from __future__ import annotations

from .mirrors import remote_signal

__all__ = ["m2m_changed", "post_delete", "post_save", "pre_delete", "pre_save"]

#: ``instance``, ``raw``, ``using``, ``update_fields`` (an instance without a pk is not sent).
pre_save = remote_signal("django.db.models.signals.pre_save")
#: ``instance``, ``created``, ``raw``, ``using``, ``update_fields`` (a frozenset or None).
post_save = remote_signal("django.db.models.signals.post_save")
#: ``instance``, ``using``, ``origin`` (the model instance or queryset deletion started from).
pre_delete = remote_signal("django.db.models.signals.pre_delete")
#: ``instance`` (with the pk it had), ``using``, ``origin``.
post_delete = remote_signal("django.db.models.signals.post_delete")
#: ``instance``, ``action``, ``reverse``, ``model`` (a label), ``pk_set``, ``using``.
m2m_changed = remote_signal("django.db.models.signals.m2m_changed")
