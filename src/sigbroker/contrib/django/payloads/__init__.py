"""The Django payloads: model instances, requests, forms, and lazy values.

:func:`register` (called by the app's ``ready()``) registers them with the
codec (:func:`sigbroker.codec.register_type`, ``subclasses=True``: every
model under one name). Each travels as a registered type, ``[name, value]``
(extension 11 of the wire format in :mod:`sigbroker.codec`)::

    "django.model"    [label, pk, db alias | nil, {attname: value}]     instances.py
    "django.request"  {method, path, full_path, GET, headers,
                       remote_addr, secure, user}                      requests.py
    "django.form"     {class, prefix, bound, data, multi, errors}      forms.py
    "django.lazy"     the value a lazy object wraps, itself encoded    lazy.py
    "django.lazytext" str: lazy text, translated at the send           lazy.py

Querysets, raw querysets and managers are registered only to be refused at
the send, with a :class:`~sigbroker.errors.PayloadError` naming the argument
and suggesting a list of pks. A worker decodes these names only when it runs
the Django app too: a message naming an unknown type is rejected.
"""

from __future__ import annotations

from django.core.signals import setting_changed
from django.db.models import Model
from django.forms import BaseForm
from django.http import HttpRequest

from ....codec import register_type
from ..settings import EXCLUDE_FIELDS
from .forms import decode_form, encode_form
from .instances import decode_instance, encode_instance, forget_plans
from .lazy import LAZY_TYPES
from .requests import decode_request, encode_request

__all__ = ["register"]


def _setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting == EXCLUDE_FIELDS:
        forget_plans()


def register() -> None:
    """Register the Django payloads with the codec (idempotent)."""
    register_type(Model, encode_instance, decode_instance, name="django.model", subclasses=True)
    register_type(
        HttpRequest, encode_request, decode_request, name="django.request", subclasses=True
    )
    register_type(BaseForm, encode_form, decode_form, name="django.form", subclasses=True)
    for cls, name, encode, decode in LAZY_TYPES:
        register_type(cls, encode, decode, name=name, subclasses=True)
    forget_plans()
    setting_changed.connect(_setting_changed, dispatch_uid="sigbroker.contrib.django.payloads")
