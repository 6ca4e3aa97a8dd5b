"""The benchmark harness's own bookkeeping (the figures are measured by ``make bench``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from benchmarks.feeder import SEQ_FIELD, _numbered, _split_at_sequence, _xadd
from benchmarks.profile import summarize
from benchmarks.readme import write_readme
from benchmarks.suite import QUICK, Plan


@pytest.mark.parametrize("plan", [Plan(), QUICK], ids=["full", "quick"])
def test_the_method_quotes_the_sizes_of_the_run(tmp_path: Path, plan: Plan) -> None:
    path = tmp_path / "README.md"
    write_readme(path, {"machine": "test box"}, "| table |", (3, 4), asdict(plan))
    text = path.read_text()
    assert "- **machine**: test box" in text
    assert "Targets met: 3 of 4." in text
    assert f"{plan.send_calls:,} calls per round, {plan.rounds} rounds" in text
    assert f"{plan.latency_per_round:,} messages per round" in text
    assert f"{plan.celery_per_round:,} tasks per round" in text
    assert f"each sending {plan.per_thread:,} messages" in text
    assert "{" not in text.split("## Method", 1)[1]


def test_the_profile_summary_counts_own_and_inclusive_samples() -> None:
    lines = [
        "main (w.py:1);loop (w.py:5);decode (c.py:9) 6",
        "main (w.py:1);loop (w.py:5);decode (c.py:10) 2",
        "main (w.py:1);loop (w.py:6) 2",
        "a line that is not a stack",
    ]
    total, own, inclusive = summarize(lines)
    assert total == 10
    assert own[0] == ("decode (c.py:9)", 6)
    assert sorted(own) == [("decode (c.py:10)", 2), ("decode (c.py:9)", 6), ("loop (w.py:6)", 2)]
    # main and loop are in every sample: only decode is left, with both of its lines.
    assert inclusive == [("decode (c.py", 8)]


def test_the_feeder_writes_xadd_commands_and_renumbers_sigbroker_messages() -> None:
    hiredis = pytest.importorskip("hiredis")
    message = b"\x82\xa1v\x01" + SEQ_FIELD + (7).to_bytes(8, "big")  # a map with "n": 7
    command = _xadd(b"bench:stream:s", b"d", message, 100_000)
    reader = hiredis.Reader()
    reader.feed(command)
    assert reader.gets() == [
        b"XADD",
        b"bench:stream:s",
        b"MAXLEN",
        b"~",
        b"100000",
        b"*",
        b"d",
        message,
    ]
    reader.feed(_numbered([_split_at_sequence(command)], 0, 2, 41))
    first, second = reader.gets(), reader.gets()
    assert first[-1].endswith((41).to_bytes(8, "big"))
    assert second[-1].endswith((42).to_bytes(8, "big"))
