"""Read-only snapshots of Django objects, as receivers get them from the wire.

A model instance arrives as an instance of its model where the model is
installed; elsewhere it arrives as a :class:`ModelSnapshot`. A request always
arrives as a :class:`RequestSnapshot` and a form as a :class:`FormSnapshot`:
the originals hold a socket, a session, a class that the receiving process
may not have. Every snapshot is read-only, so that a receiver can not mistake
one for the live object. This module imports no Django: the mappings that
the decoders build with Django (``QueryDict``, ``CaseInsensitiveMapping``)
are handed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

__all__ = ["FormSnapshot", "ModelSnapshot", "RequestSnapshot"]


class _ReadOnly:
    """Slots set once by ``__init__``; assigning or deleting an attribute raises."""

    __slots__ = ()

    def _set(self, **values: object) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"a {type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"a {type(self).__name__} is read-only")


class ModelSnapshot(_ReadOnly):
    """A model instance sent by a process where its model is installed, received where it is not.

    ``label`` is the model's ``"app_label.ModelName"``, ``pk`` its primary
    key, and each field that was sent is an attribute under its ``attname``
    (a foreign key as ``customer_id``, a file as its name); :attr:`fields`
    holds them all (also those whose name a snapshot attribute shadows, such
    as a field called ``label``). Fields that were not sent (a password,
    ``SIGBROKER_EXCLUDE_FIELDS``, deferred ones) raise :class:`AttributeError`.
    Two snapshots are equal when their label and pk are, as model instances are.
    """

    __slots__ = ("_fields", "label", "pk")

    label: str
    pk: Any
    _fields: Mapping[str, Any]

    def __init__(self, label: str, pk: Any, fields: Mapping[str, Any]) -> None:
        self._set(label=label, pk=pk, _fields=MappingProxyType(dict(fields)))

    @property
    def fields(self) -> Mapping[str, Any]:
        """The values that were sent, by ``attname`` (read-only)."""
        return self._fields

    def __getattr__(self, name: str) -> Any:
        # Called only for names that are not slots: the fields.
        try:
            fields = object.__getattribute__(self, "_fields")
        except AttributeError:  # not initialized (copy, pickle): no fields yet
            raise AttributeError(name) from None
        try:
            return fields[name]
        except KeyError:
            label = object.__getattribute__(self, "label")
            raise AttributeError(
                f"{label} snapshot has no field {name!r} (fields are sent by attname; "
                "passwords, SIGBROKER_EXCLUDE_FIELDS and deferred fields are never sent)"
            ) from None

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self._fields})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelSnapshot):
            return NotImplemented
        return self.pk is not None and (self.label, self.pk) == (other.label, other.pk)

    def __hash__(self) -> int:
        return hash((self.label, self.pk))

    def __repr__(self) -> str:
        return f"<ModelSnapshot {self.label} pk={self.pk!r}>"


class RequestSnapshot(_ReadOnly):
    """What receivers get of an ``HttpRequest``: the request line, headers, client and user.

    ``GET`` is a read-only ``QueryDict`` (``getlist()`` gives every value),
    ``headers`` a case-insensitive mapping without ``Cookie``,
    ``Authorization`` and ``Proxy-Authorization``, ``remote_addr`` the
    client's address (also ``META["REMOTE_ADDR"]``, the one key of ``META``),
    and ``user`` the authenticated user (a model instance, or a
    :class:`ModelSnapshot` where the user model is not installed) or None.
    Nothing of the body, the POST data, the files, the cookies or the
    session is sent.
    """

    __slots__ = (
        "GET",
        "META",
        "_full_path",
        "_secure",
        "headers",
        "method",
        "path",
        "remote_addr",
        "user",
    )

    method: str | None
    path: str
    GET: Mapping[str, Any]
    headers: Mapping[str, str]
    remote_addr: str | None
    META: Mapping[str, str]
    user: Any
    _full_path: str
    _secure: bool

    def __init__(
        self,
        *,
        method: str | None,
        path: str,
        full_path: str,
        GET: Mapping[str, Any],
        headers: Mapping[str, str],
        remote_addr: str | None,
        secure: bool,
        user: Any,
    ) -> None:
        meta = {} if remote_addr is None else {"REMOTE_ADDR": remote_addr}
        self._set(
            method=method,
            path=path,
            _full_path=full_path,
            GET=GET,
            headers=headers,
            remote_addr=remote_addr,
            META=MappingProxyType(meta),
            _secure=secure,
            user=user,
        )

    def get_full_path(self) -> str:
        """The path with its query string, as ``HttpRequest.get_full_path()`` gave it."""
        return self._full_path

    def is_secure(self) -> bool:
        """Whether the request came over HTTPS, as ``HttpRequest.is_secure()`` said."""
        return self._secure

    @property
    def scheme(self) -> str:
        """``"https"`` or ``"http"``."""
        return "https" if self._secure else "http"

    def __repr__(self) -> str:
        return f"<RequestSnapshot: {self.method} {self._full_path!r}>"


class FormSnapshot(_ReadOnly):
    """What receivers get of a Django form: its class, data, errors and whether it was bound.

    ``form_class`` is the form's ``"module.QualName"`` (a reference: nothing
    is imported by it), ``data`` the submitted data without the values of
    password widgets (a read-only ``QueryDict`` when the form was given one),
    ``errors`` maps each field (``"__all__"`` for the form's own errors) to
    its messages, and ``prefix`` is the form's prefix, which ``data``'s keys
    carry. Files and ``cleaned_data`` are not sent.
    """

    __slots__ = ("data", "errors", "form_class", "is_bound", "prefix")

    form_class: str
    prefix: str | None
    is_bound: bool
    data: Mapping[str, Any]
    errors: Mapping[str, tuple[str, ...]]

    def __init__(
        self,
        *,
        form_class: str,
        prefix: str | None,
        is_bound: bool,
        data: Mapping[str, Any],
        errors: Mapping[str, tuple[str, ...]],
    ) -> None:
        self._set(
            form_class=form_class,
            prefix=prefix,
            is_bound=is_bound,
            data=data,
            errors=MappingProxyType(dict(errors)),
        )

    def is_valid(self) -> bool:
        """True when the form was bound and had no errors, as ``Form.is_valid()`` said."""
        return self.is_bound and not self.errors

    def __repr__(self) -> str:
        return f"<FormSnapshot {self.form_class} bound={self.is_bound} valid={self.is_valid()}>"
