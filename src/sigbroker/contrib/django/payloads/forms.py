"""Django forms on the wire: class reference, prefix, bound or not, data and errors.

Sent as a map: ``class`` (the form's ``"module.QualName"``, a reference that
no receiver imports), ``prefix``, ``bound``, ``data`` (the submitted data
without the values of password widgets, as each key's list of values when
the form was given a ``QueryDict``, else as given) with ``multi`` telling
which, and ``errors`` (each field's messages; reading them validates a bound
form that was not validated yet, as ``form.errors`` does). Files and
``cleaned_data`` are not sent. A form arrives as a
:class:`~sigbroker.contrib.django.snapshots.FormSnapshot`.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from django.forms.widgets import MultiWidget, PasswordInput
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict

from ....naming import qualified_name
from ..snapshots import FormSnapshot

__all__ = ["decode_form", "encode_form", "password_keys"]

_KEYS = frozenset({"class", "prefix", "bound", "data", "multi", "errors"})


def password_keys(form: Any) -> set[str]:
    """The keys of ``form.data`` that hold what a password widget received."""
    keys = set()
    for name, field in form.fields.items():
        widget = field.widget
        key = form.add_prefix(name)
        if isinstance(widget, PasswordInput):
            keys.add(key)
        elif isinstance(widget, MultiWidget):
            for suffix, inner in zip(widget.widgets_names, widget.widgets, strict=True):
                if isinstance(inner, PasswordInput):
                    keys.add(key + suffix)
    return keys


def encode_form(form: Any) -> dict[str, Any]:
    """The form's stand-in: the map described in this module's docstring."""
    hidden = password_keys(form)
    data = form.data
    multi = isinstance(data, MultiValueDict)
    if multi:
        sent = {key: data.getlist(key) for key in data if key not in hidden}
    else:
        sent = {key: value for key, value in data.items() if key not in hidden}
    errors = {field: [str(text) for text in messages] for field, messages in form.errors.items()}
    return {
        "class": qualified_name(type(form)),
        "prefix": form.prefix,
        "bound": form.is_bound,
        "data": sent,
        "multi": multi,
        "errors": errors,
    }


def _data(data: Any, multi: Any) -> Any:
    if type(data) is not dict or type(multi) is not bool:
        raise ValueError("a form's data is not a map")
    if not multi:
        return MappingProxyType(data)
    query = QueryDict(mutable=True)
    for key, values in data.items():
        if type(values) is not list:
            raise ValueError("a form's data is not a map of names to lists")
        query.setlist(key, values)
    query._mutable = False
    return query


def decode_form(data: Any) -> FormSnapshot:
    """A read-only snapshot of the form; ValueError for a map of the wrong shape."""
    if type(data) is not dict or data.keys() != _KEYS:
        raise ValueError("a form is not a map of its fields")
    form_class, prefix, bound, errors = data["class"], data["prefix"], data["bound"], data["errors"]
    if not (
        type(form_class) is str
        and (prefix is None or type(prefix) is str)
        and type(bound) is bool
        and type(errors) is dict
    ):
        raise ValueError("a form has a field of the wrong type")
    checked: dict[str, tuple[str, ...]] = {}
    for field, messages in errors.items():
        if type(field) is not str or type(messages) is not list:
            raise ValueError("a form's errors are not a map of fields to messages")
        if not all(type(message) is str for message in messages):
            raise ValueError("a form's error message is not a string")
        checked[field] = tuple(messages)
    return FormSnapshot(
        form_class=form_class,
        prefix=prefix,
        is_bound=bound,
        data=_data(data["data"], data["multi"]),
        errors=checked,
    )
