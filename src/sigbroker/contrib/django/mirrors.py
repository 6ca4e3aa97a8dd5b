"""Mirror signals: the sigbroker :class:`~sigbroker.Signal` that carries a forwarded Django signal.

A Django signal named in ``SIGBROKER_FORWARD`` (:mod:`.forward`) is published
on a sigbroker signal of the same dotted name, ``"django.db.models.signals.post_save"``
for Django's ``post_save``. Another service receives it by connecting to that
mirror: :func:`remote_signal` returns it for any name, and
:mod:`sigbroker.contrib.django.signals` holds the model signals' mirrors.

This module imports no Django: a service may receive forwarded signals
without sending any, and ``sigbroker.contrib.django`` re-exports it.
"""

from __future__ import annotations

import threading

from ...errors import ConfigurationError
from ...signal import Signal

__all__ = ["remote_signal"]

_mirrors: dict[str, Signal] = {}
_lock = threading.Lock()


def remote_signal(name: str) -> Signal:
    """The mirror of the Django signal named ``name`` (``"module.attribute"``).

    Its receivers get what a forwarding service's ``SIGBROKER_FORWARD`` sends
    on that signal, with the Django signal's keyword arguments. The same name
    gives the same object within a process, so receivers connected through
    one call are found through every other. Nothing is imported: the name is
    only a name here.
    """
    if not isinstance(name, str) or "." not in name.strip(".") or name != name.strip():
        raise ConfigurationError(
            f"remote_signal() takes a Django signal's dotted name"
            f" ('module.attribute'), not {name!r}"
        )
    with _lock:
        mirror = _mirrors.get(name)
        if mirror is None:
            mirror = _mirrors[name] = Signal(name=name)
        return mirror
