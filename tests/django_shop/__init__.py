"""A small Django app for tests/test_django_payloads.py (label ``store``)."""
