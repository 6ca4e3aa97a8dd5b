"""Rounds, statistics, rows and the results table shared by every figure.

Each figure runs its sides in alternating rounds (A, B, A, B, ...) so that a
slow moment of a noisy machine hits both; a round yields one number per side.
A :class:`Row` keeps every round's number for sigbroker and for its baseline
and reports the median with min and max, plus the median of the per-round
(paired) ratios, checked against the issue's targets.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeVar

T = TypeVar("T")

Unit = Literal["us", "msg/s", "MB"]

#: Units whose smaller values are better (costs); the others are throughputs.
_LOWER_IS_BETTER: dict[Unit, bool] = {"us": True, "msg/s": False, "MB": True}


def alternate(
    sides: Mapping[str, Callable[[], T]], rounds: int, *, warmup: bool = True
) -> dict[str, list[T]]:
    """Run one round of every side in turn, ``rounds`` times; return each side's results.

    With ``warmup`` every side first runs one round that is thrown away (imports,
    connections, caches and branch predictors settle before anything counts).
    """
    if warmup:
        for run in sides.values():
            run()
    results: dict[str, list[T]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            results[name].append(run())
    return results


class Timing(NamedTuple):
    """Seconds per call by the wall clock and in this thread's CPU time (user + system)."""

    wall: float
    cpu: float


def timed(fn: Callable[[], object], calls: int) -> Timing:
    """Time ``calls`` calls of ``fn`` with the garbage collector paused.

    The CPU time is what the calling thread itself spent (encoding, system
    calls), without the time it slept waiting for Redis: on a virtual machine
    the round trip's wake-ups vary a lot, the CPU cost much less.
    """
    gc.collect()
    gc.disable()
    try:
        cpu_start, start = time.thread_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu_start
    finally:
        gc.enable()
    return Timing(elapsed / calls, cpu / calls)


def seconds_per_call(fn: Callable[[], object], calls: int) -> float:
    """Wall-clock seconds per call of ``fn`` (see :func:`timed`)."""
    return timed(fn, calls).wall


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``, linearly interpolated (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Spread:
    """The median of some measurements with their min and max."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """Summarise ``values`` (at least one)."""
        items = list(values)
        return cls(percentile(items, 50), min(items), max(items))


@dataclass(frozen=True)
class Target:
    """A goal from the issue: the median ratio, or sigbroker's median value, against a limit."""

    on: Literal["ratio", "value"]
    op: Literal["<=", ">="]
    limit: float

    def check(self, value: float) -> bool:
        """Whether ``value`` meets the target."""
        return value <= self.limit if self.op == "<=" else value >= self.limit

    def describe(self, unit: Unit) -> str:
        """The target in words, e.g. ``ratio <= 1.10x`` or ``>= 140k msg/s``."""
        if self.on == "ratio":
            return f"{self.op} {self.limit:.2f}x"
        return f"{self.op} {format_value(self.limit, unit)}"


@dataclass
class Row:
    """One line of the results table: sigbroker against a baseline, round by round.

    ``ours`` and ``base`` hold one number per round, in the unit's base scale
    (seconds, messages per second, bytes). The ratio is always sigbroker divided
    by the baseline; for costs lower is better, for throughputs higher.
    """

    figure: str
    label: str
    unit: Unit
    ours: list[float]
    base: list[float]
    base_label: str
    targets: list[Target] = field(default_factory=list)
    missing: str | None = None
    #: False where a ratio means nothing (a growth that may be zero or negative).
    compare: bool = True
    #: Further numbers for results.json only.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lower_is_better(self) -> bool:
        """True for costs (time, memory), False for throughputs."""
        return _LOWER_IS_BETTER[self.unit]

    def ratios(self) -> list[float]:
        """Per-round ratios sigbroker / baseline (paired by round); empty if not comparable."""
        if not self.compare:
            return []
        return [a / b for a, b in zip(self.ours, self.base, strict=True) if b]

    def verdicts(self) -> list[tuple[str, bool]]:
        """Each target described, with whether the median meets it."""
        if self.missing or not self.ours:
            return [(t.describe(self.unit), False) for t in self.targets]
        out = []
        for t in self.targets:
            values = self.ratios() if t.on == "ratio" else self.ours
            ok = bool(values) and t.check(Spread.of(values).median)
            out.append((t.describe(self.unit), ok))
        return out

    def to_json(self) -> dict[str, Any]:
        """The row's fields as plain JSON (to pass a row between processes)."""
        return {
            "figure": self.figure,
            "label": self.label,
            "unit": self.unit,
            "ours": self.ours,
            "base": self.base,
            "base_label": self.base_label,
            "targets": [[t.on, t.op, t.limit] for t in self.targets],
            "missing": self.missing,
            "compare": self.compare,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        """The row that :meth:`to_json` described."""
        return cls(
            figure=data["figure"],
            label=data["label"],
            unit=data["unit"],
            ours=list(data["ours"]),
            base=list(data["base"]),
            base_label=data["base_label"],
            targets=[Target(on, op, limit) for on, op, limit in data["targets"]],
            missing=data["missing"],
            compare=data["compare"],
            extra=data["extra"],
        )

    def as_dict(self) -> dict[str, Any]:
        """Everything about the row, for results.json."""
        data: dict[str, Any] = {
            "figure": self.figure,
            "label": self.label,
            "unit": self.unit,
            "baseline_label": self.base_label,
            "lower_is_better": self.lower_is_better,
            "sigbroker_rounds": self.ours,
            "baseline_rounds": self.base,
            "missing": self.missing,
            "targets": [{"target": text, "pass": ok} for text, ok in self.verdicts()],
            "extra": self.extra,
        }
        if self.missing:
            return data
        for key, values in (
            ("sigbroker", self.ours),
            ("baseline", self.base),
            ("ratio", self.ratios()),
        ):
            if values:
                s = Spread.of(values)
                data[key] = {"median": s.median, "min": s.low, "max": s.high}
        return data


def cost_rows(
    figure: str,
    label: str,
    ours: Sequence[Timing],
    base: Sequence[Timing],
    base_label: str,
    targets: Sequence[Target] = (),
) -> list[Row]:
    """A cost per call as two rows: by the wall clock (with ``targets``), then in CPU time."""
    return [
        Row(
            figure,
            label,
            "us",
            [t.wall for t in ours],
            [t.wall for t in base],
            base_label,
            list(targets),
        ),
        Row(
            figure,
            f"{label} (CPU time)",
            "us",
            [t.cpu for t in ours],
            [t.cpu for t in base],
            f"{base_label} (CPU time)",
        ),
    ]


def _scale(value: float, unit: Unit) -> tuple[float, str]:
    # The divisor and suffix that show ``value`` readably in ``unit``.
    if unit == "us":
        return (1e-3, "ms") if value >= 1e-3 else (1e-6, "us")
    if unit == "msg/s":
        return 1e3, "k msg/s"
    return 1e6, "MB"


def format_value(value: float, unit: Unit) -> str:
    """A number in its unit at a readable scale (us or ms, k msg/s, MB)."""
    divisor, suffix = _scale(value, unit)
    digits = 2 if suffix == "ms" else 1
    return f"{value / divisor:.{digits}f}{_gap(suffix)}{suffix}"


def _gap(suffix: str) -> str:
    return "" if suffix.startswith("k") else " "  # "12.5k msg/s", "12.5 us"


def format_spread(values: Sequence[float], unit: Unit) -> str:
    """``median (min..max)`` of ``values`` in ``unit``, all three on the median's scale."""
    s = Spread.of(values)
    divisor, suffix = _scale(s.median, unit)
    digits = 2 if suffix == "ms" else 1

    def num(x: float) -> str:
        return f"{x / divisor:.{digits}f}"

    return f"{num(s.median)}{_gap(suffix)}{suffix} ({num(s.low)}..{num(s.high)})"


def format_ratio(row: Row) -> str:
    """The median paired ratio with its range and which way is better."""
    if not row.ratios():
        return "-"
    s = Spread.of(row.ratios())
    better = "lower is better" if row.lower_is_better else "higher is better"
    return f"{s.median:.2f}x ({s.low:.2f}..{s.high:.2f}), {better}"


def table(rows: Sequence[Row]) -> str:
    """The results as an aligned Markdown table."""
    headers = ["Figure", "Measure", "sigbroker", "Baseline", "Baseline value", "Ratio", "Target"]
    lines: list[list[str]] = []
    for row in rows:
        if row.missing or not row.ours or not row.base:
            cells = ["n/a", row.base_label, "n/a", f"missing: {row.missing or 'no data'}"]
        else:
            cells = [
                format_spread(row.ours, row.unit),
                row.base_label,
                format_spread(row.base, row.unit),
                format_ratio(row),
            ]
        verdicts = "; ".join(f"{text} {'PASS' if ok else 'MISS'}" for text, ok in row.verdicts())
        lines.append([row.figure, row.label, *cells, verdicts or "-"])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]

    def fmt(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([fmt(headers), rule, *(fmt(line) for line in lines)])


def misses(rows: Sequence[Row]) -> list[str]:
    """One line per target missed: figure, measure, target."""
    return [
        f"{row.figure}: {row.label}: {text}"
        for row in rows
        for text, ok in row.verdicts()
        if not ok
    ]


def summary(rows: Sequence[Row]) -> tuple[int, int]:
    """How many targets pass and how many there are in all."""
    verdicts = [ok for row in rows for _, ok in row.verdicts()]
    return sum(verdicts), len(verdicts)
