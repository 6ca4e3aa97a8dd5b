"""A small shop whose services talk through sigbroker: used by ``sigbroker demo`` and compose.

* :mod:`examples.signals` declares the signals, as a shared ``signals.py`` would;
* :mod:`examples.receivers` connects receivers (``sigbroker worker -A examples.receivers``);
* :mod:`examples.emit` sends a few signals (``python -m examples.emit``).
"""
