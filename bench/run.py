"""``make bench``: run every benchmark, print one table, write it to ``bench/results.md``.

Each benchmark runs as its own process (a fresh interpreter each, nothing shared but the
machine), one after the other, so none disturbs another's timings. The table names the
machine, the date and the commit, so that figures can be compared across changes.

Run as root: .venv/bin/python bench/run.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import Row, load, table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results.md"
# In the order the table shows them: the whole install first, then its parts, then the daemon.
BENCHMARKS = (
    "whole_install",
    "ostree_install",
    "apps_load",
    "blob_verify",
    "tuf_verify",
    "daemon",
)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "?"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    return (
        f"{cpu}, {os.cpu_count()} CPUs, {memory} RAM; Linux {platform.release()};"
        f" Python {platform.python_version()}"
    )


def commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def run_one(name: str, rows_file: Path, *, quick: bool) -> tuple[bool, float]:
    script = BENCH / f"{name}.py"
    argv = [sys.executable, str(script), "--rows", str(rows_file), *(["--quick"] if quick else [])]
    print(f"\n== {name}", flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, check=False)
    return done.returncode == 0, time.monotonic() - started


def report(rows: list[Row], failed: list[str], *, quick: bool, took: dict[str, float]) -> str:
    today = datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- date: {today}",
        f"- commit: {commit()}",
        f"- run: `make bench`{' (quick)' if quick else ''}; medians, (min..max, n=runs)",
        "",
        table(rows),
        "",
    ]
    notes = [f"- {row.figure}: {row.note}" for row in rows if row.note]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines.append(
        "Time per benchmark: " + ", ".join(f"{name} {secs:.0f} s" for name, secs in took.items())
    )
    if failed:
        lines += ["", f"**Failed to complete:** {', '.join(failed)}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and smaller data")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make bench: run as root (loop devices, page cache drops, dockerd)")
        return 1
    failed: list[str] = []
    took: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="aklited-bench-rows-") as tmp:
        rows_file = Path(tmp) / "rows.jsonl"
        rows_file.touch()
        for name in args.only or BENCHMARKS:
            ok, took[name] = run_one(name, rows_file, quick=args.quick)
            if not ok:
                failed.append(name)
        rows = load(rows_file)
    text = report(rows, failed, quick=args.quick, took=took)
    RESULTS.write_text(text, encoding="utf-8")
    print("\n" + text)
    print(f"written to {RESULTS.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
