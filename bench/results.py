"""One row format for every benchmark: a figure, aklited's samples, the baseline's, the aim.

Each ``bench/<name>.py`` measures, prints its own table, and with ``--rows FILE`` also appends
its rows to FILE as JSON lines; ``bench/run.py`` (``make bench``) runs them all and writes
``bench/results.md``. A row's samples are kept whole so the table can show the median and the
spread (min..max) of both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

# "lower": aklited should take at most ``aim`` times the baseline (times, memory);
# "higher": at least ``aim`` times (throughput); "absolute": aklited's median against ``aim``
# itself (a budget such as 300 ms or 40 MiB), the baseline shown for reference only.
Better = Literal["lower", "higher", "absolute"]


@dataclass(frozen=True)
class Row:
    """One figure: aklited against its baseline, both measured in the same run."""

    bench: str  # the script, e.g. "ostree_install"
    figure: str  # what is measured, e.g. "rootfs pull + deploy (283 MB)"
    unit: str  # "s", "ms", "MiB", "MB/s", "fds", "wake-ups/min"
    aklited: Sequence[float]
    baseline_name: str  # e.g. "ostree pull-local --untrusted + admin deploy"
    baseline: Sequence[float]
    aim: float
    better: Better = "lower"
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """aklited's median over the baseline's (None without a baseline to divide by)."""
        base = median(self.baseline)
        return median(self.aklited) / base if base else None

    @property
    def met(self) -> bool | None:
        ours = median(self.aklited)
        if self.better == "absolute":
            return ours <= self.aim
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio <= self.aim if self.better == "lower" else ratio >= self.aim

    def aim_text(self) -> str:
        match self.better:
            case "absolute":
                return f"<= {self.aim:g} {self.unit}"
            case "lower":
                return f"<= {self.aim:g}x"
            case "higher":
                return f">= {self.aim:g}x"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def spread(values: Sequence[float], unit: str) -> str:
    """``median unit (min..max, n=N)``; a single sample is shown alone."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{_num(values[0])} {unit}"
    low, high = min(values), max(values)
    return f"{_num(median(values))} {unit} ({_num(low)}..{_num(high)}, n={len(values)})"


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def table(rows: Iterable[Row]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| figure | aklited | baseline | ratio | aim | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        # A budget's ratio to its reference says nothing: only the budget counts.
        shown = row.ratio if row.better != "absolute" else None
        ratio = f"{shown:.2f}x" if shown is not None else "-"
        met = {True: "yes", False: "**no**", None: "-"}[row.met]
        base = f"{row.baseline_name}: {spread(row.baseline, row.unit)}"
        lines.append(
            f"| {row.figure} | {spread(row.aklited, row.unit)} | {base} | {ratio}"
            f" | {row.aim_text()} | {met} |"
        )
    return "\n".join(lines)


def add_rows_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rows", type=Path, metavar="FILE", help="also append the rows to FILE (JSON lines)"
    )


def emit(rows: Sequence[Row], path: Path | None) -> None:
    """Print the rows as a table; append them to ``path`` when given."""
    print(table(rows), flush=True)
    if path is None:
        return
    with path.open("a", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(asdict(row)) + "\n")


def load(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            fields = json.loads(line)
            rows.append(Row(**fields))
    return rows
