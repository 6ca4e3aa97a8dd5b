"""The receivers a worker runs: ``sigbroker worker -A examples.receivers``.

A worker subscribes to the signals that have receivers once its ``-A``
modules are imported. Importing the demo's receivers connects them; a service
of your own would define its receivers here with ``@receiver``, as in
:mod:`sigbroker.demo.receivers`.
"""

from __future__ import annotations

from sigbroker.demo import receivers

__all__ = ["receivers"]
