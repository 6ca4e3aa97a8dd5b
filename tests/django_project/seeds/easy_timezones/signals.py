"""django-easy-timezones' easy_timezones/signals.py, on sigbroker."""

import sigbroker

detected_timezone = sigbroker.Signal(providing_args=["instance", "timezone"])
