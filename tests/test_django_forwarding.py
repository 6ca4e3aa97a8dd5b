"""Forwarding Django's own signals (``SIGBROKER_FORWARD``) to mirror signals, after commit.

In-process through ``sigbroker.testing.in_memory()`` (the real client, codec
and worker): the project's setting forwards ``post_save`` of ``shop.Order``;
other settings are tried with ``override_settings``, which reconnects the
forwarding receivers. One test runs across processes: a worker started as
``manage.py sigbroker worker -A billing.forwarded`` receives ``post_save``
of an Order saved in this process inside ``atomic()``.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.db import transaction  # noqa: E402
from django.dispatch import Signal as DjangoSignal  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from sigbroker import Signal, config  # noqa: E402
from sigbroker.errors import ConfigurationError  # noqa: E402
from sigbroker.testing import in_memory  # noqa: E402
from tests.django_setup import MANAGE, setup_project  # noqa: E402
from tests.helpers import WorkerProcess  # noqa: E402

#: A third-party app's signal, as django-registration declares its own.
thing_happened = DjangoSignal()

POST_SAVE = "django.db.models.signals.post_save"
POST_DELETE = "django.db.models.signals.post_delete"
THING = "tests.test_django_forwarding.thing_happened"


@pytest.fixture(scope="module", autouse=True)
def project_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Django on tests/django_project's settings (once per session)."""
    return setup_project(tmp_path_factory.mktemp("django"))


@pytest.fixture(autouse=True)
def fresh_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new rate limit per test: a line logged by an earlier test hides none here."""
    from sigbroker.contrib.django import forward
    from sigbroker.throttle import Throttle

    monkeypatch.setattr(forward, "_throttle", Throttle(forward.logger))


@pytest.fixture
def calls() -> Iterator[Callable[[Signal, object], list[dict[str, Any]]]]:
    """``listen(mirror, sender)``: connect a recording receiver, disconnected after the test."""
    connected: list[tuple[Signal, Any, object]] = []

    def listen(mirror: Signal, sender: object = None) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []

        def record(sender: object, **kwargs: Any) -> None:
            got.append({"sender": sender, **kwargs})

        mirror.connect(record, sender=sender)
        connected.append((mirror, record, sender))
        return got

    yield listen
    for mirror, func, sender in connected:
        mirror.disconnect(func, sender=sender)


def _order(reference: str) -> Any:
    from shop.models import Order

    return Order.objects.create(reference=reference, total=Decimal("12.50"))


def _sent(broker: Any, name: str) -> list[Any]:
    return [m for m in broker.sent if m.signal == name]


# -- the mirrors --------------------------------------------------------------------


def test_remote_signal_is_one_mirror_per_name_and_the_ready_made_ones_are_djangos_names() -> None:
    from sigbroker.contrib.django import remote_signal, signals

    assert remote_signal(POST_SAVE) is remote_signal(POST_SAVE) is signals.post_save
    for name in ("pre_save", "post_save", "pre_delete", "post_delete", "m2m_changed"):
        mirror = getattr(signals, name)
        assert isinstance(mirror, Signal)
        assert mirror.name == f"django.db.models.signals.{name}"
    assert remote_signal(THING).name == THING
    for bad in ("post_save", "", " a.b", 3):
        with pytest.raises(ConfigurationError, match="dotted name"):
            remote_signal(bad)  # type: ignore[arg-type]


def test_remote_signal_is_exported_without_django() -> None:
    code = (
        "import sys; sys.modules['django'] = None\n"
        "from sigbroker.contrib.django import remote_signal, ModelSnapshot\n"
        "from sigbroker.contrib.django.signals import post_save\n"
        "assert remote_signal('django.db.models.signals.post_save') is post_save\n"
        "print(post_save.name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == POST_SAVE


# -- forwarding, in-process ---------------------------------------------------------


def test_post_save_of_a_listed_model_arrives_with_djangos_arguments(calls: Any) -> None:
    from shop.models import Order

    from sigbroker.contrib.django.signals import post_save

    by_label = calls(post_save, "shop.Order")
    by_class = calls(post_save, Order)
    with in_memory() as broker:
        order = _order("F-1")  # autocommit: published at once
        order.reference = "F-1b"
        order.save(update_fields=["reference"])
    assert [m.sender for m in _sent(broker, POST_SAVE)] == ["shop.Order", "shop.Order"]
    assert broker.stats.failed == 0 and broker.stats.rejected == 0
    assert by_class == by_label
    first, second = by_label
    assert first["sender"] is Order and first["signal"] is post_save
    assert type(first["instance"]) is Order and first["instance"].pk == order.pk
    assert first["instance"].reference == "F-1" and first["instance"]._state.adding is False
    assert first["created"] is True and first["raw"] is False and first["using"] == "default"
    assert first["update_fields"] is None
    assert set(first) == {
        "sender",
        "signal",
        "instance",
        "created",
        "raw",
        "using",
        "update_fields",
    }
    assert second["created"] is False and second["instance"].reference == "F-1b"
    assert second["update_fields"] == frozenset({"reference"})
    assert isinstance(second["update_fields"], frozenset)


def test_an_unlisted_model_and_an_unlisted_signal_are_not_forwarded(calls: Any) -> None:
    from tests.django_shop.models import Customer

    with in_memory() as broker:
        customer = Customer.objects.create(name="not listed")  # post_save: store.Customer
        _order("F-2").delete()  # post_delete: not in the project's setting
        customer.delete()
    assert [m.sender for m in broker.sent] == ["shop.Order"]  # the Order's post_save only


def test_post_delete_is_forwarded_after_the_delete_with_the_pk_it_had(calls: Any) -> None:
    from sigbroker.contrib.django.signals import post_delete

    got = calls(post_delete, "shop.Order")
    order = _order("F-3")
    pk = order.pk
    with (
        override_settings(SIGBROKER_FORWARD={POST_DELETE: ["shop.Order"]}),
        in_memory() as broker,
    ):
        order.delete()  # inside Django's own atomic(): published when it commits
    assert order.pk is None  # Django clears it after post_delete: the message had it
    assert [m.sender for m in broker.sent] == ["shop.Order"]
    [call] = got
    assert call["instance"].pk == pk and call["instance"].reference == "F-3"
    assert call["origin"].pk == pk and call["using"] == "default"


def test_a_queryset_delete_is_forwarded_with_its_origin_as_the_label(calls: Any) -> None:
    from shop.models import Order

    from sigbroker.contrib.django.signals import post_delete

    got = calls(post_delete, "shop.Order")
    pks = {_order("F-4").pk, _order("F-5").pk}
    with (
        override_settings(SIGBROKER_FORWARD={POST_DELETE: ["shop.Order"]}),
        in_memory() as broker,
    ):
        Order.objects.filter(pk__in=pks).delete()
    assert broker.stats.failed == 0 and len(broker.sent) == 2
    assert {call["instance"].pk for call in got} == pks
    assert {call["origin"] for call in got} == {"shop.Order"}


def test_every_sender_with_a_star(calls: Any) -> None:
    from sigbroker.contrib.django.signals import post_save
    from tests.django_shop.models import Customer

    got = calls(post_save, "store.Customer")
    with override_settings(SIGBROKER_FORWARD={POST_SAVE: "*"}), in_memory() as broker:
        customer = Customer.objects.create(name="everyone")
        _order("F-6")
    assert [m.sender for m in broker.sent] == ["store.Customer", "shop.Order"]
    [call] = got
    assert type(call["instance"]) is Customer and call["instance"].pk == customer.pk


def test_a_third_party_django_signal_is_forwarded(calls: Any) -> None:
    from shop.models import Order

    from sigbroker.contrib.django import remote_signal

    got = calls(remote_signal(THING))
    order = _order("F-7")
    with override_settings(SIGBROKER_FORWARD={THING: "*"}), in_memory() as broker:
        responses = thing_happened.send(sender="acme", order=order, note="hi", model=Order)
    assert [r[1] for r in responses] == [None]  # the forwarding receiver
    assert [(m.signal, m.sender) for m in broker.sent] == [(THING, "acme")]
    [call] = got
    assert call["sender"] == "acme" and call["note"] == "hi"
    assert type(call["order"]) is Order and call["order"].pk == order.pk
    assert call["model"] == "shop.Order"  # a class travels as its reference
    with override_settings(SIGBROKER_FORWARD={THING: ["shop.Order"]}), in_memory() as broker:
        thing_happened.send(sender="acme", note="not from an Order")
        thing_happened.send(sender=Order, note="from an Order")
    assert [m.kwargs["note"] for m in broker.sent] == ["from an Order"]


def test_inside_atomic_it_is_published_on_commit_and_dropped_on_rollback(calls: Any) -> None:
    from sigbroker.contrib.django.signals import post_save

    got = calls(post_save, "shop.Order")

    class Abort(Exception):
        pass

    with in_memory() as broker:
        with transaction.atomic():
            kept = _order("T-1")
            assert broker.sent == []  # encoded, waiting for the commit
        assert [call["instance"].pk for call in got] == [kept.pk]
        with pytest.raises(Abort), transaction.atomic():
            _order("T-2")
            raise Abort
        with transaction.atomic():
            with pytest.raises(Abort), transaction.atomic():  # a savepoint rolled back
                _order("T-3")
                raise Abort
            last = _order("T-4")
    assert [call["instance"].reference for call in got] == ["T-1", "T-4"]
    assert got[1]["instance"].pk == last.pk and got[1]["created"] is True


def test_the_values_are_taken_at_the_save_not_at_the_commit(calls: Any) -> None:
    from sigbroker.contrib.django.signals import post_save

    got = calls(post_save, "shop.Order")
    with in_memory(), transaction.atomic():
        order = _order("V-1")
        order.reference = "V-2"  # changed after the save, before the commit
    assert [call["instance"].reference for call in got] == ["V-1"]


def test_what_can_not_be_encoded_is_logged_once_and_skipped_and_the_send_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sigbroker.contrib.django import forward

    caplog.set_level(logging.WARNING, logger=forward.__name__)
    with override_settings(SIGBROKER_FORWARD={THING: "*"}), in_memory() as broker:
        for _ in range(3):
            thing_happened.send(sender="acme", what=object())
        thing_happened.send(sender=object(), what="an object as the sender")
        thing_happened.send(sender="acme", what="fine")
    assert [m.kwargs for m in broker.sent] == [{"what": "fine"}]
    lines = [r.getMessage() for r in caplog.records if r.name == forward.__name__]
    assert len(lines) == 1, lines  # rate-limited: one line, not one per send
    assert f"Not forwarding a send of {THING}" in lines[0] and "'what'" in lines[0]


def test_pre_save_of_a_new_instance_is_skipped_without_breaking_the_save(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shop.models import Order

    caplog.set_level(logging.WARNING)
    pre_save = "django.db.models.signals.pre_save"
    with override_settings(SIGBROKER_FORWARD={pre_save: ["shop.Order"]}), in_memory() as broker:
        order = _order("P-1")  # unsaved at pre_save: refused by the codec, logged
        order.save()  # saved: forwarded
    assert Order.objects.filter(pk=order.pk).exists()
    assert [m.kwargs["instance"].pk for m in broker.sent] == [order.pk]
    assert "unsaved" in caplog.text


def test_a_failing_publish_is_logged_and_the_save_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from shop.models import Order

    config.configure(url="redis://127.0.0.1:1/0", namespace="nowhere")
    caplog.set_level(logging.WARNING)
    order = _order("B-1")  # autocommit: published at once, and Redis is not there
    assert Order.objects.filter(pk=order.pk).exists()
    assert f"Could not forward a send of {POST_SAVE}" in caplog.text


def test_in_eager_mode_the_mirrors_receivers_run_on_commit(calls: Any) -> None:
    from shop.models import Order

    from sigbroker.contrib.django.signals import post_save

    config.configure(eager=True)
    got = calls(post_save, Order)  # eager sends match senders as Django does: by identity
    with transaction.atomic():
        order = _order("E-1")
        assert got == []
    assert [call["instance"] for call in got] == [order]  # the object itself, not a copy


# -- the setting --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["django.db.models.signals.post_save"], "must map Django signals' dotted names"),
        ({"post_save": "*"}, r"\['post_save'\]: not a dotted name"),
        ({"no_such_module.signal": "*"}, "can not import no_such_module"),
        ({"django.db.models.signals.no_such": "*"}, "has no attribute 'no_such'"),
        ({"shop.signals.order_placed": "*"}, "not a django.dispatch.Signal"),
        ({"django.db.models.signals.ModelSignal": "*"}, "not a django.dispatch.Signal"),
        ({POST_SAVE: "shop.Order"}, "must be '\\*' or a list of model labels"),
        ({POST_SAVE: []}, "lists no model label"),
        ({POST_SAVE: ["shop"]}, "'shop' is not a model label"),
        ({POST_SAVE: ["shop.NoSuchModel"]}, "no installed model is labelled 'shop.NoSuchModel'"),
    ],
)
def test_a_bad_setting_is_a_configuration_error_naming_it(value: object, message: str) -> None:
    from sigbroker.contrib.django import forward

    before = forward.connected()
    with pytest.raises(ConfigurationError, match=message) as raised:
        forward.install(value)
    assert "SIGBROKER_FORWARD" in str(raised.value)
    assert forward.connected() == before  # the receivers are left as they were


def test_the_setting_is_checked_when_it_changes_and_at_startup(project_db: Path) -> None:
    from sigbroker.contrib.django import forward

    [(signal, sender, uid)] = forward.connected()  # the project's setting
    assert (signal, sender.__name__, uid) == (
        django.db.models.signals.post_save,
        "Order",
        f"sigbroker.forward:{POST_SAVE}",
    )
    with (
        pytest.raises(ConfigurationError, match="no installed model"),
        override_settings(SIGBROKER_FORWARD={POST_SAVE: ["shop.Nope"]}),
    ):
        pass
    assert len(forward.connected()) == 1
    # At startup: the app's ready() refuses it, and manage.py says which entry.
    code = (
        "import os, sys, django\n"
        f"sys.path.insert(0, {str(MANAGE.parent)!r})\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'project.settings'\n"
        "from django.conf import settings\n"
        "settings.SIGBROKER_FORWARD = {'django.db.models.signals.post_save': ['shop.Nope']}\n"
        "django.setup()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SIGBROKER_TEST_DB": str(project_db), "PATH": "/usr/bin:/bin"},
        cwd=str(MANAGE.parent.parent.parent),
    )
    assert out.returncode != 0
    assert "ConfigurationError" in out.stderr and "shop.Nope" in out.stderr, out.stderr


# -- across processes ---------------------------------------------------------------


def test_a_worker_receives_post_save_of_an_order_saved_in_atomic_after_commit(
    project_db: Path, start_worker: Callable[..., WorkerProcess], redis_url: str, namespace: str
) -> None:
    from shop.signals import marker

    config.configure(url=redis_url, namespace=namespace)
    worker = start_worker(
        entry=(str(MANAGE), "sigbroker"),
        modules=("billing.forwarded",),
        env={"SIGBROKER_TEST_DB": str(project_db)},
    )
    worker.wait_subscribed(f"{namespace}:{POST_SAVE}")
    with transaction.atomic():
        order = _order("X-1")
        # Sent plainly, at once: when the worker has handled it, anything
        # published before it has been handled too. The post_save is not.
        assert marker.send("test", label="inside") == 1
        worker.wait_records(1, receiver="billing.on_marker")
        assert [r["receiver"] for r in worker.records()] == ["billing.on_marker"]
    (got,) = worker.wait_records(1, receiver="billing.on_order_saved")
    assert got["pk"] == order.pk and got["created"] is True and got["reference"] == "X-1"
    assert got["instance_type"] == "shop.models.Order" and got["adding"] is False
    assert got["sender"] == "shop.models.Order" and got["sender_is_class"] is True
    assert got["raw"] is False and got["using"] == "default" and got["update_fields"] is None
