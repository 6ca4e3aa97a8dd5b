"""The seed's six signal modules, as their projects write them (tests/test_django_seeds.py).

Each subpackage holds one project's ``signals`` module with ``django.dispatch``
replaced by ``sigbroker``: django-simple-history, aldryn-accounts,
django-easy-timezones, viewflow, django-registration (redux) and
django-cors-headers. ``seeds.signals`` imports the six, so that autodiscovery
connects nothing by surprise and every process names them alike;
``seeds.receivers`` records what arrives (tests/app/recorder.py).
"""
