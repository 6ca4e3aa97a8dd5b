"""sigbroker's Django app: ``INSTALLED_APPS += ["sigbroker.contrib.django"]``.

At startup (:mod:`.apps`) it names model senders by their label
(:mod:`.senders`), reads the ``SIGBROKER_*`` settings (:mod:`.settings`),
registers the Django payloads (:mod:`.payloads`: model instances, requests and
forms) and imports the ``signals`` and ``receivers`` modules of the installed
apps (:mod:`.discovery`). It publishes after commit
(:meth:`sigbroker.Signal.send_on_commit`, :mod:`.transaction`) and runs the CLI
inside the project's settings (``python manage.py sigbroker worker``). This
module only re-exports what receivers may meet: the snapshots that stand for
Django objects on the receiving side.
"""

from .snapshots import FormSnapshot, ModelSnapshot, RequestSnapshot

__all__ = ["FormSnapshot", "ModelSnapshot", "RequestSnapshot"]
