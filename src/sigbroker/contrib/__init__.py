"""Integrations of sigbroker with frameworks: :mod:`sigbroker.contrib.django`."""
