"""The demo's shop as a service of your own would run it (docker compose uses these).

The shop itself ships inside the package, so that ``sigbroker demo`` works
from a wheel: its signals are in :mod:`sigbroker.demo.signals`, its receivers
in :mod:`sigbroker.demo.receivers`, its sample sends in
:mod:`sigbroker.demo.emit`. Here are the two programs compose runs:

* :mod:`examples.receivers`: ``sigbroker worker -A examples.receivers``;
* :mod:`examples.emit`: ``python -m examples.emit`` sends the samples once.
"""
