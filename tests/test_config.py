"""Settings from the environment: secrets from a variable or from a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sigbroker import config
from sigbroker.errors import ConfigurationError


def test_secrets_from_the_variable_rotate_by_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGBROKER_SECRET", "new, old")
    assert config.from_environment().secrets == (b"new", b"old")


def test_secrets_from_a_file_one_per_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secrets"
    path.write_bytes(b"new-secret\r\n\n  old, with a comma \n")
    monkeypatch.setenv("SIGBROKER_SECRET_FILE", str(path))
    assert config.from_environment().secrets == (b"new-secret", b"old, with a comma")
    assert config.settings().secrets == (b"new-secret", b"old, with a comma")


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "cannot read the secret file"), (b"\n \n", "holds no secret")],
)
def test_a_secret_file_that_gives_nothing_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None, match: str
) -> None:
    path = tmp_path / "secrets"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("SIGBROKER_SECRET_FILE", str(path))
    with pytest.raises(ConfigurationError, match=match) as raised:
        config.from_environment()
    assert str(path) in str(raised.value)


def test_the_variable_and_the_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secrets"
    path.write_text("from-file\n")
    monkeypatch.setenv("SIGBROKER_SECRET_FILE", str(path))
    monkeypatch.setenv("SIGBROKER_SECRET", "from-variable")
    with pytest.raises(ConfigurationError, match="not both") as raised:
        config.from_environment()
    assert "from-file" not in str(raised.value) and "from-variable" not in str(raised.value)
