"""The orders app's signals (imported in every process by the sigbroker app's autodiscovery)."""

from sigbroker import Signal

#: Sent with ``send_on_commit`` once the order's row is committed.
order_created = Signal(providing_args=["order"])
