"""Figure 9: sending a Django model instance against a plain dict of the same fields.

Runs in its own process (``python -m benchmarks.sender URL --figures django``):
Django is configured there with standalone settings (an in-memory SQLite
database, ``sigbroker.contrib.django`` and ``benchmarks.django_shop``), the
two tables are created with the schema editor, and one saved ``Order`` (six
fields besides its pk: a foreign key, a str, a Decimal, an aware datetime, a
bool, an int) is sent as ``order=instance`` and as ``order={...}``, a dict
of the very fields the instance carries on the wire (``attname: value``, the
foreign key as ``customer_id``), built in every call as a sender writing it
by hand would. Both go through sigbroker (the same codec, datetime and
Decimal typed on both sides), so the ratio is what the model payload itself
costs: ``Codec.pack``, ``Codec.decode`` (an instance built with
``Model.from_db``, no query, against a dict) and ``Signal.send`` on the
benchmark's Redis. Without Django the figure says so and the rest runs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import sigbroker
from benchmarks.harness import Row, alternate, cost_rows, seconds_per_call, timed
from benchmarks.workload import SEND_NAMESPACE
from sigbroker import Signal
from sigbroker.codec import Codec

FIGURE = "9. Django"
#: What the table says when Django can not be imported.
MISSING = "Django is not installed (pip install -e '.[django]')"
#: The baseline of every row: the same fields as a dict, through sigbroker too.
BASE = "the same fields as a dict"

#: The signal the figure sends (nobody subscribes: PUBLISH returns 0).
order_signal = Signal(name="benchmarks.django_order")


def available() -> bool:
    """Whether Django can be imported."""
    try:
        import django  # noqa: F401
    except ImportError:
        return False
    return True


def missing_rows(reason: str) -> list[Row]:
    """The rows of this figure when it could not run."""
    return [Row(FIGURE, "Signal.send, order=instance", "us", [], [], BASE, missing=reason)]


def setup_django() -> tuple[Any, Any]:
    """Configure Django in this process, create the tables; return the Order model and one."""
    import django
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        SECRET_KEY="benchmarks only",
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "sigbroker.contrib.django",
            "benchmarks.django_shop",
        ],
    )
    django.setup()
    from django.db import connection

    from benchmarks.django_shop.models import Customer, Order

    with connection.schema_editor() as editor:
        editor.create_model(Customer)
        editor.create_model(Order)
    customer = Customer.objects.create(email="alice@example.com")
    order = Order.objects.create(
        customer=customer,
        reference="ORD-2024-000123",
        total=Decimal("1249.90"),
        placed_at=datetime(2024, 5, 1, 12, 30, 15, 250_000, tzinfo=timezone(timedelta(hours=2))),
        paid=True,
        quantity=3,
    )
    return Order, order


def as_dict(order: Any) -> dict[str, Any]:
    """What the instance carries on the wire, as a sender would write it by hand."""
    return {
        "id": order.id,
        "customer_id": order.customer_id,
        "reference": order.reference,
        "total": order.total,
        "placed_at": order.placed_at,
        "paid": order.paid,
        "quantity": order.quantity,
    }


def django_rows(url: str, *, rounds: int, calls: int, codec_calls: int) -> list[Row]:
    """Figure 9: encode, decode and send of ``order=instance`` vs ``order={fields}``."""
    if not available():
        return missing_rows(MISSING)
    model, order = setup_django()
    codec = Codec()
    name = order_signal.name
    sender = model._meta.label  # what a model class sender becomes on the wire

    def pack_instance() -> bytes:
        return bytes(codec.pack(name, sender, {"order": order}))

    def pack_dict() -> bytes:
        return bytes(codec.pack(name, sender, {"order": as_dict(order)}))

    instance_message, dict_message = pack_instance(), pack_dict()
    arrived = codec.decode(instance_message).kwargs["order"]
    if type(arrived) is not model or arrived.__dict__.keys() < as_dict(order).keys():
        raise RuntimeError(f"the order arrived as {arrived!r}, not as a whole {model.__name__}")

    def per_call(fn: Callable[[], object]) -> Callable[[], float]:
        return lambda: seconds_per_call(fn, codec_calls)

    codec_times = alternate(
        {
            "pack instance": per_call(pack_instance),
            "pack dict": per_call(pack_dict),
            "decode instance": per_call(lambda: codec.decode(instance_message)),
            "decode dict": per_call(lambda: codec.decode(dict_message)),
        },
        rounds,
    )
    sigbroker.configure(url=url, namespace=SEND_NAMESPACE, secret="", eager=False)
    send = alternate(
        {
            "instance": lambda: timed(lambda: order_signal.send(sender=model, order=order), calls),
            "dict": lambda: timed(
                lambda: order_signal.send(sender=model, order=as_dict(order)), calls
            ),
        },
        rounds,
    )
    rows = cost_rows(FIGURE, "Signal.send, order=instance", send["instance"], send["dict"], BASE)
    rows += [
        Row(
            FIGURE,
            "encode (Codec.pack), order=instance",
            "us",
            codec_times["pack instance"],
            codec_times["pack dict"],
            BASE,
        ),
        Row(
            FIGURE,
            "decode (Codec.decode), instance via from_db",
            "us",
            codec_times["decode instance"],
            codec_times["decode dict"],
            BASE,
        ),
    ]
    return rows
