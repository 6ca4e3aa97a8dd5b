"""The seeds app; it lets ``zoneinfo.ZoneInfo`` travel, for django-easy-timezones' signal.

easy-timezones sends ``detected_timezone(instance, timezone)`` with a tz
object, which the codec does not know: without this registration the send
raises ``PayloadError`` naming ``timezone``. Registering it here, in
``ready()``, does it in every process of the project (sender and worker).
"""

from zoneinfo import ZoneInfo

from django.apps import AppConfig

from sigbroker.codec import register_type


class SeedsConfig(AppConfig):
    name = "seeds"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        register_type(ZoneInfo, str, ZoneInfo, name="zoneinfo.ZoneInfo")
