"""django-cors-headers' corsheaders/signals.py, on sigbroker.

The middleware allows a request when any receiver returns something truthy:
it reads ``send()``'s responses, which only eager mode returns (a published
send returns how many workers got it).
"""

from sigbroker import Signal

# If any attached handler returns Truthy, CORS will be allowed for the request.
# This can be used to build custom logic into the request handling when the
# configuration doesn't work.
check_request_enabled = Signal(providing_args=["request"])
