"""register_type(subclasses=True): a class's subclasses travel under its name and functions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sigbroker.codec import Codec, register_type
from sigbroker.codec import registry as registry_module
from sigbroker.errors import PayloadError


class Shape:
    def __init__(self, name: str) -> None:
        self.name = name


class Square(Shape):
    pass


class Circle(Shape):
    pass


class Unsendable:
    pass


class UnsendableChild(Unsendable):
    pass


@pytest.fixture(autouse=True)
def _forget_registrations() -> Iterator[None]:
    yield
    with registry_module._REGISTRY_LOCK:
        for cls in (Shape, Square, Circle, Unsendable):
            if cls in registry_module.BY_TYPE and registry_module.BY_TYPE[cls].cls is cls:
                registry_module._forget(cls)


def _decode_shape(value: Any) -> tuple[str, str]:
    return ("shape", value)


def round_trip(value: object) -> object:
    codec = Codec()
    return codec.decode(codec.pack("tests.shapes", None, {"value": value})).kwargs["value"]


def test_subclasses_travel_under_the_base_name() -> None:
    register_type(Shape, lambda s: s.name, _decode_shape, name="shape", subclasses=True)
    assert round_trip(Square("sq")) == ("shape", "sq")
    assert round_trip([Circle("c"), Shape("s")]) == [("shape", "c"), ("shape", "s")]


def test_without_subclasses_only_the_exact_class_matches() -> None:
    register_type(Shape, lambda s: s.name, _decode_shape, name="shape")
    with pytest.raises(PayloadError, match="argument 'value' is not serializable"):
        round_trip(Square("sq"))


def test_a_subclass_seen_before_the_registration_is_classified_again() -> None:
    with pytest.raises(PayloadError, match="not serializable"):
        round_trip(Circle("early"))  # filed as unsupported
    register_type(Shape, lambda s: s.name, _decode_shape, name="shape", subclasses=True)
    assert round_trip(Circle("early")) == ("shape", "early")


def test_a_subclass_registered_itself_wins_over_its_base() -> None:
    register_type(Square, lambda s: s.name.upper(), lambda v: ("square", v), name="square")
    register_type(Shape, lambda s: s.name, _decode_shape, name="shape", subclasses=True)
    assert round_trip(Square("sq")) == ("square", "SQ")
    assert round_trip(Circle("c")) == ("shape", "c")


def test_an_encoder_refuses_in_its_own_words() -> None:
    def refuse(value: object) -> object:
        raise PayloadError("is not for the wire: send its id")

    register_type(Unsendable, refuse, lambda v: v, name="unsendable", subclasses=True)
    with pytest.raises(PayloadError, match=r"^argument 'value' is not for the wire: send its id$"):
        round_trip(UnsendableChild())
