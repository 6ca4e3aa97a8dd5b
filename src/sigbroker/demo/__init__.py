"""``sigbroker demo``: a small shop whose services talk through sigbroker, end to end.

Everything the demo runs ships inside the package, so ``sigbroker demo`` works
from a wheel, in any directory:

* :mod:`sigbroker.demo.signals` declares the shop's signals, as a shared
  ``signals.py`` would;
* :mod:`sigbroker.demo.receivers` connects the receivers that the demo's
  worker runs (``sigbroker worker -A sigbroker.demo.receivers``);
* :mod:`sigbroker.demo.emit` holds the sample sends;
* :mod:`sigbroker.demo.runner` runs it all: :func:`run_demo`.

Importing this package imports neither the signals nor the receivers.
"""

from .runner import DemoError, run_demo, summarize_latency

__all__ = ["DemoError", "run_demo", "summarize_latency"]
