"""sigbroker's Django app: ``INSTALLED_APPS += ["sigbroker.contrib.django"]``.

At startup (:mod:`.apps`) it names model senders by their label
(:mod:`.senders`), reads the ``SIGBROKER_*`` settings (:mod:`.settings`),
registers the Django payloads (:mod:`.payloads`: model instances, requests and
forms) and imports the ``signals`` and ``receivers`` modules of the installed
apps (:mod:`.discovery`). It publishes after commit
(:meth:`sigbroker.Signal.send_on_commit`, :mod:`.transaction`) and runs the CLI
inside the project's settings (``python manage.py sigbroker worker``). It
forwards the Django signals that ``SIGBROKER_FORWARD`` names to other
services (:mod:`.forward`), which receive them on mirror signals
(:func:`remote_signal`, :mod:`.signals`). This module only re-exports what
receivers may meet, and imports no Django: the snapshots that stand for
Django objects on the receiving side, and :func:`remote_signal`.
"""

from .mirrors import remote_signal
from .snapshots import FormSnapshot, ModelSnapshot, RequestSnapshot

__all__ = ["FormSnapshot", "ModelSnapshot", "RequestSnapshot", "remote_signal"]
