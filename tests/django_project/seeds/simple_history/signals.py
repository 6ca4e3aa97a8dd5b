"""django-simple-history's simple_history/signals.py, on sigbroker."""

import sigbroker

pre_create_historical_record = sigbroker.Signal(
    providing_args=[
        "instance",
        "history_instance",
        "history_date",
        "history_user",
        "history_change_reason",
        "using",
    ]
)
post_create_historical_record = sigbroker.Signal(
    providing_args=[
        "instance",
        "history_instance",
        "history_date",
        "history_user",
        "history_change_reason",
        "using",
    ]
)
