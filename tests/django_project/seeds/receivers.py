"""One receiver on every signal of the six seed modules: records what it gets.

Each argument is recorded as plain facts (its type, its fields, what it
lacks), so the test reads in its own process what the worker's receiver saw.
Returns True: django-cors-headers allows a request when a receiver does.
"""

from datetime import tzinfo
from typing import Any

from django.db.models import Model
from django.forms import BaseForm
from django.http import HttpRequest
from tests.app.recorder import record

from seeds import signals as seeds
from sigbroker import Signal, receiver
from sigbroker.contrib.django import FormSnapshot, RequestSnapshot
from sigbroker.errors import RemoteError

SIGNALS = [
    value
    for module in (getattr(seeds, name) for name in seeds.__all__)
    for value in vars(module).values()
    if isinstance(value, Signal)
]


def _type(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _model(value: Any) -> dict[str, Any]:
    return {
        "type": _type(value),
        "pk": value.pk,
        "adding": value._state.adding,
        "fields": {k: v for k, v in vars(value).items() if not k.startswith("_")},
        "deferred": sorted(value.get_deferred_fields()),
    }


def _request(value: Any) -> dict[str, Any]:
    user = getattr(value, "user", None)
    return {
        "type": _type(value),
        "method": value.method,
        "path": value.path,
        "full_path": value.get_full_path(),
        "GET": {key: value.GET.getlist(key) for key in value.GET},
        "headers": dict(value.headers),
        "remote_addr": value.META.get("REMOTE_ADDR"),
        "secure": value.is_secure(),
        "user": _model(user) if isinstance(user, Model) else None,
    }


def _form(value: Any) -> dict[str, Any]:
    data = value.data
    return {
        "type": _type(value),
        "form_class": getattr(value, "form_class", _type(value)),
        "is_bound": value.is_bound,
        "data": {key: data.get(key) for key in data},
        "errors": {key: list(messages) for key, messages in value.errors.items()},
        "valid": value.is_valid(),
    }


def describe(value: Any) -> Any:
    """Plain facts about one argument (as it is, when the codec can record it itself)."""
    if isinstance(value, Model):
        return _model(value)
    if isinstance(value, RequestSnapshot | HttpRequest):
        return _request(value)
    if isinstance(value, FormSnapshot | BaseForm):
        return _form(value)
    if isinstance(value, BaseException):
        return {
            "type": _type(value),
            "remote": isinstance(value, RemoteError),
            "type_name": getattr(value, "type_name", None),
            "args": list(value.args),
            "message": getattr(value, "message", None),
            "str": str(value),
        }
    if isinstance(value, tzinfo):
        return {"type": _type(value), "key": str(value)}
    return value


@receiver(SIGNALS)
def on_seed_signal(sender: Any, signal: Signal, **kwargs: Any) -> bool:
    """Record the signal's name, its sender and each argument described."""
    record(signal.name, sender, **{name: describe(value) for name, value in kwargs.items()})
    return True
