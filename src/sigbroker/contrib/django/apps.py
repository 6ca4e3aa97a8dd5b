"""The app config: ``INSTALLED_APPS += ["sigbroker.contrib.django"]``."""

from __future__ import annotations

from types import ModuleType

from django.apps import AppConfig

__all__ = ["SigbrokerConfig"]


class SigbrokerConfig(AppConfig):  # type: ignore[misc]  # django ships no types
    """sigbroker's Django app: model senders by label, settings, payloads, forwarding.

    One call per concern, so that each stays in its module.
    """

    name = "sigbroker.contrib.django"
    label = "sigbroker"
    verbose_name = "sigbroker"

    def __init__(self, app_name: str, app_module: ModuleType | None) -> None:
        super().__init__(app_name, app_module)
        # Before any model class exists (Django imports models after creating
        # every app config), so that a receiver connected with sender=Order in
        # a models module records the label "shop.Order".
        from .senders import install as install_sender_labels

        install_sender_labels()

    def ready(self) -> None:
        """Read the settings, register the payloads, import the apps' signals and receivers.

        Then connect the receivers that forward the Django signals that
        ``SIGBROKER_FORWARD`` names (after autodiscovery: a signals module
        it imports may define one).
        """
        from .discovery import autodiscover
        from .forward import install as install_forwarding
        from .payloads import register as register_payloads
        from .settings import install as install_settings

        install_settings()
        register_payloads()
        autodiscover()
        install_forwarding()
