"""The STATUS= line `systemctl status aklited` shows, and when a new one is sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from aklited.config import load_config
from aklited.daemon.jobs import Status
from aklited.daemon.notify import Notifier
from aklited.daemon.runner import STATUS_MESSAGE_CHARS, Daemon, status_line
from aklited.outcomes import State

RUNNING_V1 = Status(current={"name": "lmp-1"})


class Recording(Notifier):
    def __init__(self) -> None:
        super().__init__(environ={})
        self.lines: list[str] = []

    def status(self, text: str) -> None:
        self.lines.append(text)


def daemon(tmp_path: Path) -> tuple[Daemon, Recording]:
    notifier = Recording()
    return Daemon(load_config([tmp_path]), notifier), notifier


def test_idle_names_the_running_target() -> None:
    assert status_line(RUNNING_V1) == "idle; running lmp-1"
    done = replace(RUNNING_V1, last_result=(0, "lmp-1 is now current"))
    assert status_line(done) == "idle; running lmp-1"


def test_idle_after_a_failure_says_what_failed_in_one_short_line() -> None:
    failed = replace(RUNNING_V1, last_result=(80, "no Docker engine answers at unix:///x"))
    assert status_line(failed) == (
        "idle; running lmp-1; last result 80: no Docker engine answers at unix:///x"
    )
    long = replace(RUNNING_V1, last_result=(50, "reading the drive: " + "x" * 500))
    line = status_line(long)
    assert line.endswith("...") and len(line) < STATUS_MESSAGE_CHARS + 40


def test_a_new_current_target_is_a_new_line_though_the_state_stays(tmp_path: Path) -> None:
    d, notifier = daemon(tmp_path)
    after = replace(RUNNING_V1, current={"name": "lmp-2"})
    d.status_changed(RUNNING_V1, after)
    assert notifier.lines == ["idle; running lmp-2"]


def test_progress_within_the_same_tenth_sends_no_new_line(tmp_path: Path) -> None:
    d, notifier = daemon(tmp_path)
    at_41 = replace(RUNNING_V1, state=State.INSTALLING, progress=(41, "copying", 0))
    at_47 = replace(at_41, progress=(47, "copying more", 0))
    at_52 = replace(at_41, progress=(52, "copying yet more", 0))
    d.status_changed(at_41, at_47)
    d.status_changed(at_47, at_52)
    assert notifier.lines == ["installing 52%: copying yet more"]
