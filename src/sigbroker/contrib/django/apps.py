"""The app's configuration: what Django runs once the registry is ready."""

from __future__ import annotations

from django.apps import AppConfig


class SigbrokerConfig(AppConfig):  # type: ignore[misc]  # Django is untyped here
    """``sigbroker.contrib.django``: finds the project's signals and receivers at start-up."""

    name = "sigbroker.contrib.django"
    label = "sigbroker"
    verbose_name = "sigbroker"

    def ready(self) -> None:
        """Import every installed app's ``signals`` and ``receivers`` modules."""
        from .discovery import autodiscover

        autodiscover()
