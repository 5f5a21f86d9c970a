"""Summarize tuf-conformance runs (JUnit XML), one per verifier back-end, side by side.

Usage::

    python summarize.py --offline offline_incompatible.txt aklited=a.xml python-tuf=p.xml

Prints ``NAME: N passed, M failed`` per run (raw). Then the tests an offline bundle cannot
satisfy (the ``--offline`` file: ``test_name`` or ``test_name[param]``, then ``# reason``)
are set aside where they failed only at their request-order/count assertion (a failing
line that reads ``metadata_statistics`` or ``artifact_statistics``), and the counts are
printed again; a listed test that failed earlier still counts as failed. Last: every other
failure with its failing line, and the tests the last run passes and the first fails.
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REQUEST_ASSERTIONS = ("metadata_statistics", "artifact_statistics")


@dataclass(frozen=True, slots=True)
class Result:
    """One test's outcome (passed, failed, skipped) and, when failed, the failing line."""

    outcome: str
    line: str = ""

    @property
    def request_only(self) -> bool:
        """Failed at an assertion on the requests the repository saw."""
        return self.outcome == "failed" and any(a in self.line for a in REQUEST_ASSERTIONS)


@dataclass(frozen=True, slots=True)
class Run:
    """One back-end's results by test id."""

    name: str
    results: dict[str, Result]

    def outcome(self, test_id: str) -> str:
        """``passed``, ``failed``, ``skipped`` or ``-`` (not run)."""
        result = self.results.get(test_id)
        return result.outcome if result is not None else "-"

    def line(self, *, set_aside: frozenset[str] = frozenset()) -> str:
        """``NAME: N passed, M failed`` (plus skipped and set-aside counts when any)."""
        counts = {"passed": 0, "failed": 0, "skipped": 0}
        for test_id, result in self.results.items():
            if test_id not in set_aside:
                counts[result.outcome] += 1
        text = f"{self.name}: {counts['passed']} passed, {counts['failed']} failed"
        if counts["skipped"]:
            text += f", {counts['skipped']} skipped"
        if set_aside:
            text += f" ({len(set_aside)} request-pattern failures set aside)"
        return text


def _failing_line(text: str) -> str:
    """The last ``>`` line of a pytest traceback: the statement that failed."""
    lines = [line[1:].strip() for line in text.splitlines() if line.startswith(">")]
    return lines[-1] if lines else ""


def load_run(name: str, path: Path) -> Run:
    """Read a pytest ``--junitxml`` file."""
    tree = ET.parse(path)  # noqa: S314 (written by the run just before)
    results: dict[str, Result] = {}
    for case in tree.iter("testcase"):
        test_id = case.get("name", "?")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            results[test_id] = Result("failed", _failing_line(failure.text or ""))
        elif case.find("skipped") is not None:
            results[test_id] = Result("skipped")
        else:
            results[test_id] = Result("passed")
    return Run(name, results)


def load_offline(path: Path) -> dict[str, str]:
    """``test_name`` or ``test_name[param]`` -> reason, from the offline list."""
    entries: dict[str, str] = {}
    for line in path.read_text().splitlines():
        text, _, reason = line.partition("#")
        if text.strip():
            entries[text.strip()] = reason.strip()
    return entries


def offline_entry(test_id: str, entries: dict[str, str]) -> str | None:
    """The offline-list entry that covers ``test_id`` (exact id first, then its function)."""
    if test_id in entries:
        return test_id
    function = test_id.partition("[")[0]
    return function if function in entries else None


def main(argv: list[str] | None = None) -> int:
    """Print the summary; 0 unless an input cannot be read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", type=Path, required=True, help="offline-incompatible list")
    parser.add_argument("runs", nargs="+", metavar="NAME=JUNIT_XML")
    args = parser.parse_args(argv)
    runs = []
    for spec in args.runs:
        name, _, path = spec.partition("=")
        runs.append(load_run(name, Path(path)))
    entries = load_offline(args.offline)
    every = sorted({t for run in runs for t in run.results})
    offline = {t: e for t in every if (e := offline_entry(t, entries)) is not None}
    aside = {
        run.name: frozenset(
            t for t in offline if (res := run.results.get(t)) is not None and res.request_only
        )
        for run in runs
    }

    print("== raw")
    for run in runs:
        print(run.line())
    print(f"\n== without request-pattern failures of the {len(offline)} listed tests")
    for run in runs:
        print(run.line(set_aside=aside[run.name]))
    print(f"\n== tests an offline bundle cannot satisfy ({args.offline.name})")
    print("   ('(requests)': failed at its request assertion only, so set aside above)")
    for entry, reason in entries.items():
        print(f"  {entry}\n      why: {reason}")
        for test_id in (t for t, e in offline.items() if e == entry):
            results = ", ".join(
                f"{run.name} {run.outcome(test_id)}"
                + (" (requests)" if test_id in aside[run.name] else "")
                for run in runs
            )
            print(f"      {test_id.removeprefix(entry) or test_id}: {results}")
    for run in runs:
        failed = {
            t: r
            for t, r in run.results.items()
            if r.outcome == "failed" and t not in aside[run.name]
        }
        print(f"\n== {run.name}: other failures ({len(failed)})")
        for test_id, result in failed.items():
            print(f"  {test_id}\n      at: {result.line}")
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        gap = [t for t in every if first.outcome(t) == "failed" and last.outcome(t) == "passed"]
        print(f"\n== {last.name} passes, {first.name} fails ({len(gap)})")
        for test_id in gap:
            print(f"  {test_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
