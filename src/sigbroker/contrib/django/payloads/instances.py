"""Model instances on the wire: label, pk, database alias and the concrete fields' values.

A field travels under its ``attname`` (a foreign key as ``customer_id``, never
the related object), a file field as the file's name, a binary field as
bytes. Never sent: the password of a user model (``AbstractBaseUser.password``),
the fields that ``SIGBROKER_EXCLUDE_FIELDS`` lists for the model or a model
it inherits from, and the fields that were deferred on the sending instance
(sending them would cost a query each). An unsaved instance (pk None) is
refused at the send.

Where the model is installed (found with ``apps.get_model(label)``, which
only looks in the app registry and never imports), an instance arrives as
``Model.from_db()`` builds one from a row: no query, ``_state.adding`` false,
``_state.db`` the sender's alias if this process has it, else the router's
choice for reading. Fields not sent, or excluded here, are deferred: reading
one queries the database (``refresh_from_db()``), it is never a wrong value.
Fields the receiver's model lacks are ignored (a rolling deploy). Elsewhere
an instance arrives as a :class:`~sigbroker.contrib.django.snapshots.ModelSnapshot`.
"""

from __future__ import annotations

import threading
from typing import Any

from django.apps import apps
from django.db import connections, router
from django.db.models import FileField, Model

from ....errors import PayloadError
from ..settings import excluded_fields
from ..snapshots import ModelSnapshot

__all__ = ["decode_instance", "encode_instance", "forget_plans", "installed_model", "sent_fields"]

#: Per model class: ``(attname, is a file field)`` of each field it sends.
_PLANS: dict[type, tuple[tuple[str, bool], ...]] = {}
_PLANS_LOCK = threading.Lock()


def _password_fields(model: Any) -> frozenset[str]:
    try:  # imported here: a project without django.contrib.auth has no user model
        from django.contrib.auth.base_user import AbstractBaseUser
    except ImportError:
        return frozenset()
    return frozenset({"password"}) if issubclass(model, AbstractBaseUser) else frozenset()


def sent_fields(model: Any) -> tuple[tuple[str, bool], ...]:
    """``(attname, is a file)`` of each concrete field of ``model`` that may be sent."""
    plan = _PLANS.get(model)
    if plan is None:
        excluded = excluded_fields()
        hidden = set(_password_fields(model))
        for cls in model.__mro__:  # the model, its proxies' and parents' labels
            meta: Any = getattr(cls, "_meta", None)
            if meta is not None and isinstance(meta.label_lower, str):
                hidden |= excluded.get(meta.label_lower, frozenset())
        plan = tuple(
            (field.attname, isinstance(field, FileField))
            for field in model._meta.concrete_fields
            if field.name not in hidden and field.attname not in hidden
        )
        with _PLANS_LOCK:
            _PLANS[model] = plan
    return plan


def forget_plans() -> None:
    """Compute which fields each model sends again (``SIGBROKER_EXCLUDE_FIELDS`` changed)."""
    with _PLANS_LOCK:
        _PLANS.clear()


def encode_instance(instance: Any) -> list[Any]:
    """``[label, pk, db alias, {attname: value}]``; PayloadError for an unsaved instance."""
    meta = instance._meta
    pk = instance.pk
    if pk is None:
        raise PayloadError(
            f"is an unsaved {meta.label} (its pk is None): save it before sending it,"
            " or send its values"
        )
    loaded = instance.__dict__  # a deferred field is missing here, and stays unsent
    values: dict[str, Any] = {}
    for attname, is_file in sent_fields(type(instance)):
        if attname not in loaded:
            continue
        value = loaded[attname]
        if is_file:
            value = getattr(instance, attname).name  # a FieldFile, whatever was assigned
        elif type(value) is memoryview:  # a BinaryField as read from some databases
            value = bytes(value)
        values[attname] = value
    return [meta.label, pk, instance._state.db, values]


def installed_model(label: str) -> Any:
    """The installed model of ``label``, or None: the app registry only, never an import."""
    try:
        return apps.get_model(label)
    except (LookupError, ValueError):  # ValueError: not "app_label.ModelName"
        return None


def decode_instance(data: Any) -> Any:
    """An instance of the installed model, built as from a row; else a ModelSnapshot."""
    if type(data) is not list or len(data) != 4:
        raise ValueError("a model instance is not [label, pk, db, fields]")
    label, pk, db, values = data
    if type(label) is not str or not (db is None or type(db) is str) or type(values) is not dict:
        raise ValueError("a model instance has a field of the wrong type")
    if not all(type(name) is str for name in values):
        raise ValueError("a model instance's field names are not strings")
    model = installed_model(label)
    if model is None:
        return ModelSnapshot(label, pk, values)
    meta = model._meta
    values.setdefault(meta.pk.attname, pk)
    names = []
    row = []
    for attname, _ in sent_fields(model):  # what this process would send: no password here
        if attname in values:
            names.append(attname)
            row.append(values[attname])
    alias = db if db is not None and db in connections.settings else router.db_for_read(model)
    instance: Model = model.from_db(alias, names, row)
    return instance
