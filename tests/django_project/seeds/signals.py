"""Imports the six seed modules, so that every process of the project has them by name."""

from seeds.aldryn_accounts import signals as aldryn_accounts
from seeds.corsheaders import signals as corsheaders
from seeds.easy_timezones import signals as easy_timezones
from seeds.registration import signals as registration
from seeds.simple_history import signals as simple_history
from seeds.viewflow import signals as viewflow

__all__ = [
    "aldryn_accounts",
    "corsheaders",
    "easy_timezones",
    "registration",
    "simple_history",
    "viewflow",
]
