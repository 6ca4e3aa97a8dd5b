"""Names that cross the wire: a signal's stable name and a sender's reference.

A signal is known on the wire by its name, ``"<module>.<variable>"`` unless
given: :func:`find_signal_name` finds the module-level variable that holds it.
A sender travels as a reference (:func:`sender_reference`): a class as
``"module.QualName"`` (built by :func:`qualified_name`, the one place that
builds it), a string as itself, None as nil; a framework can reference some
classes its own way (:func:`set_class_reference`: the Django app names a model
by its label, ``"shop.Order"``). Nothing here imports a module or looks a
name up because a message named it.

:class:`SignalLike` is what a client needs of a signal, so that the client
does not import :mod:`sigbroker.signal`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .errors import ConfigurationError, PayloadError

__all__ = [
    "SignalLike",
    "callable_name",
    "creator_globals",
    "find_signal_name",
    "qualified_name",
    "sender_reference",
    "set_class_reference",
]


class SignalLike(Protocol):
    """What a client reads of a signal to send it: :class:`~sigbroker.signal.Signal` is one."""

    @property
    def name(self) -> str:
        """The signal's stable name on the wire."""

    @property
    def providing_args(self) -> frozenset[str] | None:
        """The declared keyword arguments, or None when any are accepted."""

    def validate(self, kwargs: Mapping[str, object]) -> None:
        """Raise :class:`PayloadError` if ``kwargs`` break ``providing_args``."""


def qualified_name(obj: object) -> str:
    """Return ``"module.QualName"`` of a class or function (``?`` for a part it lacks)."""
    return f"{getattr(obj, '__module__', None) or '?'}.{getattr(obj, '__qualname__', '?')}"


def callable_name(func: object) -> str:
    """How a log line names a receiver: its ``__qualname__``, as Django's do, else its repr."""
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) and name else repr(func)


#: How a class sender is referenced; see :func:`set_class_reference`.
_class_reference: Callable[[type], str] = qualified_name


def set_class_reference(reference: Callable[[type], str] | None) -> None:
    """Reference class senders with ``reference(cls)`` from now on (None: ``"module.QualName"``).

    The Django app installs one that names a model class by its label
    (``"shop.Order"``) and every other class by :func:`qualified_name`. It
    must be installed before receivers are connected with a class sender:
    a connection records its sender's reference when it is made.
    """
    global _class_reference
    _class_reference = qualified_name if reference is None else reference


def sender_reference(sender: object) -> str | None:
    """Return how ``sender`` travels on the wire: ``"module.QualName"``, the string, or None.

    A class is referenced as the installed :func:`set_class_reference` says.

    Raises :class:`PayloadError` for any other object: a model instance or a
    request means nothing in another process, so it is refused at the sender.
    """
    if sender is None or isinstance(sender, str):
        return sender
    if isinstance(sender, type):
        return _class_reference(sender)
    raise PayloadError(
        "senders that cross the wire must be a class, a string or None, "
        f"not {qualified_name(type(sender))}"
    )


def creator_globals(signal: object) -> dict[str, Any] | None:
    """The globals of the code that is creating ``signal`` (call it from ``__init__``).

    Skips the ``__init__`` frames of Signal and its subclasses: the creator is above them.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_locals.get("self") is signal:
        frame = frame.f_back  # type: ignore[assignment]
    return None if frame is None else frame.f_globals


def find_signal_name(signal: object, namespace: Mapping[str, Any] | None) -> str:
    """Return ``"<module>.<variable>"`` for the module-level variable that holds ``signal``.

    ``namespace`` is the creating module's globals (from :func:`creator_globals`).
    Raises :class:`ConfigurationError` when no variable there holds it.
    """
    module = None if namespace is None else _module_name(namespace)
    if namespace is not None and module is not None:
        for variable, value in list(namespace.items()):
            if value is signal:
                return f"{module}.{variable}"
    raise ConfigurationError(
        f"can not derive a name for the signal created in module {module!r}: it is not "
        "held by a module-level variable there; pass Signal(name=...)"
    )


def _module_name(namespace: Mapping[str, Any]) -> str | None:
    name = namespace.get("__name__")
    spec = namespace.get("__spec__")
    spec_name = getattr(spec, "name", None)
    if name == "__main__" and isinstance(spec_name, str):
        return spec_name  # run with ``python -m pkg.mod``: the importable name
    return name if isinstance(name, str) else None
