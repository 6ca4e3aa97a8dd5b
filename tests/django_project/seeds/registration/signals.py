"""django-registration (redux)'s registration/signals.py (its signals), on sigbroker.

The original also connects ``login_user`` to ``user_activated`` when
``REGISTRATION_AUTO_LOGIN`` is set: it logs the request's session in, which
only the process that holds the request can do, so it is left out here.
"""

from sigbroker import Signal

# An admin has approved a user's account
user_approved = Signal(providing_args=["user", "request"])

# A new user has registered.
user_registered = Signal(providing_args=["user", "request"])

# A user has activated his or her account.
user_activated = Signal(providing_args=["user", "request"])
