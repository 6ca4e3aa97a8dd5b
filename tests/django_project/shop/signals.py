"""The shop's signals, written as the seed projects write theirs."""

from sigbroker import Signal

order_placed = Signal(providing_args=["order_id", "reference", "total"])
order_cancelled = Signal(providing_args=["order_id"])
#: Sent plainly (never on commit) to show that everything sent before it was handled.
marker = Signal(providing_args=["label"])
