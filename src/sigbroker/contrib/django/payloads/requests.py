"""``HttpRequest`` on the wire: the request line, headers, client address and user.

Sent as a map: ``method``, ``path``, ``full_path`` (``get_full_path()``),
``GET`` (each key's list of values), ``headers`` (without ``Cookie``,
``Authorization`` and ``Proxy-Authorization``), ``remote_addr``
(``META["REMOTE_ADDR"]``), ``secure`` (``is_secure()``) and ``user`` (the
authenticated user as a model instance, or nil for an anonymous user or a
request that went through no authentication middleware). Nothing of the body,
POST data, files, cookies or session is read or sent: a request whose body
can no longer be read encodes all the same. It arrives as a
:class:`~sigbroker.contrib.django.snapshots.RequestSnapshot`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model
from django.http import QueryDict
from django.utils.datastructures import CaseInsensitiveMapping
from django.utils.functional import LazyObject

from ....errors import PayloadError
from ..snapshots import ModelSnapshot, RequestSnapshot
from .lazy import evaluate

__all__ = ["SECRET_HEADERS", "decode_request", "encode_request"]

#: Headers that carry credentials: never sent, in any case of their names.
SECRET_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})

_KEYS = frozenset(
    {"method", "path", "full_path", "GET", "headers", "remote_addr", "secure", "user"}
)


def _user(request: Any) -> Any:
    user = getattr(request, "user", None)  # set by AuthenticationMiddleware, lazily
    if isinstance(user, LazyObject):  # (isinstance sees through it: it evaluates)
        try:
            user = evaluate(user)
        except PayloadError as exc:
            raise PayloadError(f"is a request whose user failed to load ({exc})") from exc
    return user if isinstance(user, Model) else None  # AnonymousUser: None


def encode_request(request: Any) -> dict[str, Any]:
    """The request's stand-in: the map described in this module's docstring."""
    return {
        "method": request.method,
        "path": request.path,
        "full_path": request.get_full_path(),
        "GET": {key: list(values) for key, values in request.GET.lists()},
        "headers": {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in SECRET_HEADERS
        },
        "remote_addr": request.META.get("REMOTE_ADDR"),
        "secure": request.is_secure(),
        "user": _user(request),
    }


def _query_dict(lists: Any) -> Any:
    if type(lists) is not dict:
        raise ValueError("a request's GET is not a map")
    query = QueryDict(mutable=True)
    for key, values in lists.items():
        if type(key) is not str or type(values) is not list:
            raise ValueError("a request's GET is not a map of names to lists")
        if not all(type(value) is str for value in values):
            raise ValueError("a request's GET holds a value that is not a string")
        query.setlist(key, values)
    query._mutable = False  # as Django freezes request.GET
    return query


def decode_request(data: Any) -> RequestSnapshot:
    """A read-only snapshot of the request; ValueError for a map of the wrong shape."""
    if type(data) is not dict or data.keys() != _KEYS:
        raise ValueError("a request is not a map of its fields")
    headers = data["headers"]
    if type(headers) is not dict or not all(
        type(k) is str and type(v) is str for k, v in headers.items()
    ):
        raise ValueError("a request's headers are not a map of strings")
    user = data["user"]
    if not (user is None or isinstance(user, Model | ModelSnapshot)):
        raise ValueError("a request's user is not a model instance")
    method, path, full_path = data["method"], data["path"], data["full_path"]
    remote_addr, secure = data["remote_addr"], data["secure"]
    if not (
        (method is None or type(method) is str)
        and type(path) is str
        and type(full_path) is str
        and (remote_addr is None or type(remote_addr) is str)
        and type(secure) is bool
    ):
        raise ValueError("a request has a field of the wrong type")
    return RequestSnapshot(
        method=method,
        path=path,
        full_path=full_path,
        GET=_query_dict(data["GET"]),
        headers=CaseInsensitiveMapping(headers),
        remote_addr=remote_addr,
        secure=secure,
        user=user,
    )
