"""The Django app: ``INSTALLED_APPS += ["sigbroker.contrib.django"]``.

It finds the ``signals`` and ``receivers`` modules of the installed apps
(:mod:`~sigbroker.contrib.django.discovery`), publishes after commit
(:meth:`sigbroker.Signal.send_on_commit`, :mod:`~sigbroker.contrib.django.transaction`)
and runs the CLI inside the project's settings (``python manage.py sigbroker
worker``). Nothing outside this package imports Django at module level.
"""
