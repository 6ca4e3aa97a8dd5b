"""Django's lazy values: evaluated at the send, or refused when they stand for a query.

A ``SimpleLazyObject`` (``request.user``) is evaluated and travels as what it
wraps; if evaluating it raises, the send is refused with a
:class:`~sigbroker.errors.PayloadError` naming the argument, and nothing is
published. Lazy text (``gettext_lazy``) travels as its text in the active
language. A ``QuerySet`` or a manager is refused: evaluating it would send a
snapshot of rows that the receivers could not tell from a live query, and
sending it as a query would run it in every receiver; a list of pks says
what is meant.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.db.models.manager import BaseManager
from django.db.models.query import RawQuerySet
from django.utils.functional import LazyObject, Promise, empty

from ....codec.limits import describe
from ....errors import InvalidMessage, PayloadError

__all__ = ["encode_lazy_object", "encode_promise", "evaluate", "refuse_query", "same"]


def evaluate(value: Any) -> Any:
    """What a lazy object wraps, evaluating it now; PayloadError if that raises."""
    wrapped = value._wrapped
    if wrapped is empty:
        try:
            value._setup()
        except Exception as exc:
            raise PayloadError(
                f"is a lazy object that failed to evaluate ({describe(exc)})"
            ) from exc
        wrapped = value._wrapped
    return wrapped


def encode_lazy_object(value: Any) -> Any:
    """A lazy object's stand-in: the value it wraps, which the codec encodes in turn."""
    return evaluate(value)


def encode_promise(value: Any) -> str:
    """Lazy text's stand-in: the text, translated now."""
    return str(value)


def same(value: Any) -> Any:
    """The decoder of a stand-in that is already the value (it was decoded in place)."""
    return value


def refuse_query(value: Any) -> Any:
    """Refuse a queryset or a manager, suggesting a list of pks."""
    model = getattr(value, "model", None)
    label = model._meta.label if model is not None else "a model"
    kind = "a manager" if isinstance(value, BaseManager) else f"a {type(value).__name__}"
    raise PayloadError(
        f"is {kind} of {label}: a query is not sent (it would run again in every"
        " receiver); send a list of pks, e.g. list(qs.values_list('pk', flat=True))"
    )


def never_sent(value: Any) -> Any:
    """The decoder of a type that no sender ever encodes."""
    raise InvalidMessage("a query never travels in a message")


#: (class, wire name, encoder, decoder) of each lazy kind, for registration.
LAZY_TYPES: tuple[tuple[type, str, Any, Any], ...] = (
    (LazyObject, "django.lazy", encode_lazy_object, same),
    (Promise, "django.lazytext", encode_promise, same),
    (QuerySet, "django.queryset", refuse_query, never_sent),
    (RawQuerySet, "django.rawqueryset", refuse_query, never_sent),
    (BaseManager, "django.manager", refuse_query, never_sent),
)
