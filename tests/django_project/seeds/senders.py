"""Classes the seed projects send as ``sender``: a view (registration) and a flow (viewflow)."""

from django.views.generic import FormView


class RegistrationView(FormView):
    """django-registration sends ``sender=self.__class__``."""


class HelloWorldFlow:
    """viewflow sends ``sender=flow_class``."""
