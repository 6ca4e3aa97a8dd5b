"""aldryn-accounts' aldryn_accounts/signals.py (its signal declarations), on sigbroker."""

import sigbroker

user_signed_up = sigbroker.Signal(providing_args=["user", "form"])
user_sign_up_attempt = sigbroker.Signal(providing_args=["username", "email", "result"])
signup_code_sent = sigbroker.Signal(providing_args=["signup_code"])
signup_code_used = sigbroker.Signal(providing_args=["signup_code_result"])
email_confirmed = sigbroker.Signal(providing_args=["email_address"])
email_confirmation_sent = sigbroker.Signal(providing_args=["confirmation"])
password_changed = sigbroker.Signal(providing_args=["user"])
