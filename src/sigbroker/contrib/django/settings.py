"""The ``SIGBROKER_*`` settings of a Django project.

``SIGBROKER_URL``, ``SIGBROKER_NAMESPACE``, ``SIGBROKER_SECRET`` (one secret,
or a list: the first signs, all verify) and ``SIGBROKER_EAGER`` (a bool) in
``settings.py`` configure ``Signal.send`` and ``Client()``. Each comes from
the first of: ``sigbroker.configure()``, the project's settings, the
environment (``SIGBROKER_URL`` or ``REDIS_URL``, ...; see :mod:`sigbroker.config`).
A setting left out, or None, falls through to the environment.

``SIGBROKER_EXCLUDE_FIELDS`` maps a model label to fields never to send in
its instances, beside the password, which is never sent::

    SIGBROKER_EXCLUDE_FIELDS = {"accounts.Profile": ["ssn", "date_of_birth"]}

It applies to the model and to the models that inherit from it (proxies and
multi-table children), both when sending and when receiving: such a field
arrives deferred, and reading it queries the database.

``SIGBROKER_FORWARD`` maps the dotted names of Django signals to the model
labels whose sends to forward to other services, or ``"*"`` for every
sender (:mod:`.forward`)::

    SIGBROKER_FORWARD = {
        "django.db.models.signals.post_save": ["shop.Order"],
        "registration.signals.user_registered": "*",
    }

It is checked at startup: a module that does not import, a name that is no
``django.dispatch.Signal``, a label of no installed model raise
:class:`~sigbroker.errors.ConfigurationError` naming the entry.

A test that changes one of them with ``override_settings`` sees the change.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.signals import setting_changed

from ... import config
from ...errors import ConfigurationError

__all__ = [
    "CONNECTION_SETTINGS",
    "EXCLUDE_FIELDS",
    "FORWARD",
    "excluded_fields",
    "forwarded",
    "install",
    "read",
]

#: The Django settings that configure the default client, and configure()'s names for them.
CONNECTION_SETTINGS = {
    "SIGBROKER_URL": "url",
    "SIGBROKER_NAMESPACE": "namespace",
    "SIGBROKER_SECRET": "secret",
    "SIGBROKER_EAGER": "eager",
}
#: The setting that lists, per model label, the fields never to send.
EXCLUDE_FIELDS = "SIGBROKER_EXCLUDE_FIELDS"
#: The setting that names the Django signals to forward, with their senders.
FORWARD = "SIGBROKER_FORWARD"


def read() -> dict[str, object]:
    """The connection settings the project sets, by ``configure()``'s names; checked.

    Raises :class:`ConfigurationError` naming a setting of the wrong type.
    """
    found: dict[str, object] = {}
    for setting, name in CONNECTION_SETTINGS.items():
        value = getattr(settings, setting, None)
        if value is None:
            continue
        if name == "eager":
            ok = isinstance(value, bool)
        elif name == "secret":
            ok = isinstance(value, str | bytes) or (
                isinstance(value, list | tuple) and all(isinstance(s, str | bytes) for s in value)
            )
        else:
            ok = isinstance(value, str) and bool(value)
        if not ok:
            raise ConfigurationError(f"settings.{setting} {_expected(name)}")
        found[name] = value
    return found


def _expected(name: str) -> str:
    return {
        "eager": "must be True or False",
        "secret": "must be a string, or a list of strings (the first signs)",
    }.get(name, "must be a non-empty string")


def excluded_fields() -> dict[str, frozenset[str]]:
    """``SIGBROKER_EXCLUDE_FIELDS`` by lowercased label: the names never to send.

    Raises :class:`ConfigurationError` when the setting is not a mapping of
    labels to lists of field names.
    """
    value: Any = getattr(settings, EXCLUDE_FIELDS, None) or {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"settings.{EXCLUDE_FIELDS} must map model labels to field names")
    out: dict[str, frozenset[str]] = {}
    for label, names in value.items():
        if not isinstance(label, str) or label.count(".") != 1:
            raise ConfigurationError(
                f"settings.{EXCLUDE_FIELDS}: {label!r} is not a model label (app_label.ModelName)"
            )
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ConfigurationError(
                f"settings.{EXCLUDE_FIELDS}[{label!r}] must be a list of field names"
            )
        out[label.lower()] = out.get(label.lower(), frozenset()) | frozenset(names)
    return out


def check_excluded_fields() -> None:
    """Refuse a name in ``SIGBROKER_EXCLUDE_FIELDS`` that is no field of its installed model.

    A misspelled name would otherwise send the field it was meant to keep
    back. Labels of models not installed here are skipped: one settings file
    may serve several services.
    """
    for label, names in excluded_fields().items():
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        for name in sorted(names):
            try:
                model._meta.get_field(name)
            except FieldDoesNotExist:
                raise ConfigurationError(
                    f"settings.{EXCLUDE_FIELDS}[{label!r}]:"
                    f" {model._meta.label} has no field {name!r}"
                ) from None


def forwarded(value: object = None) -> list[tuple[str, Any, tuple[Any, ...] | None]]:
    """``SIGBROKER_FORWARD`` (or ``value``), checked and resolved.

    Returns ``(dotted name, the django.dispatch.Signal, the model classes)``
    per entry, None for ``"*"`` (every sender). The modules the setting names
    are imported: the setting is the project's own configuration, unlike a
    name read from a message. Raises :class:`ConfigurationError` naming the
    entry that is wrong.
    """
    if value is None:
        value = getattr(settings, FORWARD, None)
        if value is None:
            return []
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"settings.{FORWARD} must map Django signals' dotted names to model labels or '*',"
            f" not {type(value).__name__}"
        )
    return [
        (name, _django_signal(name), _senders(name, senders)) for name, senders in value.items()
    ]


def _django_signal(name: object) -> Any:
    from django.dispatch import Signal

    where = f"settings.{FORWARD}[{name!r}]"
    if not isinstance(name, str) or "." not in name.strip("."):
        raise ConfigurationError(f"{where}: not a dotted name ('module.attribute')")
    module_name, attribute = name.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{where}: can not import {module_name}: {exc}") from exc
    try:
        signal = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{where}: {module_name} has no attribute {attribute!r}") from None
    if not isinstance(signal, Signal):
        raise ConfigurationError(
            f"{where}: {name} is a {type(signal).__module__}.{type(signal).__qualname__},"
            " not a django.dispatch.Signal (a sigbroker Signal crosses processes already)"
        )
    return signal


def _senders(name: str, senders: object) -> tuple[Any, ...] | None:
    where = f"settings.{FORWARD}[{name!r}]"
    if senders == "*":
        return None
    if isinstance(senders, str) or not isinstance(senders, list | tuple | set | frozenset):
        raise ConfigurationError(f"{where} must be '*' or a list of model labels, not {senders!r}")
    if not senders:
        raise ConfigurationError(
            f"{where} lists no model label: give some, or '*' for every sender"
        )
    models = []
    for label in senders:
        if not isinstance(label, str) or label.count(".") != 1:
            raise ConfigurationError(
                f"{where}: {label!r} is not a model label (app_label.ModelName)"
            )
        try:
            models.append(apps.get_model(label))
        except LookupError:
            raise ConfigurationError(f"{where}: no installed model is labelled {label!r}") from None
    return tuple(models)


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in CONNECTION_SETTINGS:
        config.reload()


def install() -> None:
    """Read the settings from now on, below ``configure()``; fail now if one is wrong."""
    check_excluded_fields()
    config.set_source(read)
    setting_changed.connect(_setting_changed, dispatch_uid="sigbroker.contrib.django.settings")
