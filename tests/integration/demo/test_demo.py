"""`make demo` stays true: a drive plugged in, aklited alone updates the simulated device,
and the demo leaves the machine as it found it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.ostree]

RELEASE_1 = "intel-corei7-64-lmp-1"
RELEASE_2 = "intel-corei7-64-lmp-2"


def processes() -> dict[int, str]:
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found


def udevd_pids() -> set[int]:
    return {
        pid for pid, cmd in processes().items() if cmd.split(" ", 1)[0].endswith("systemd-udevd")
    }


def loop_backing_files() -> list[str]:
    listed = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in listed.stdout.splitlines()]


def in_order(out: str, *pieces: str) -> bool:
    """Whether every piece occurs in ``out``, each after the one before."""
    position = 0
    for piece in pieces:
        position = out.find(piece, position)
        if position < 0:
            return False
        position += len(piece)
    return True


def test_the_demo_shows_aklited_updating_the_device_from_a_drive() -> None:
    udevd_before = udevd_pids()
    done = subprocess.run(
        [sys.executable, "-m", "aklited_sim.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    # The story as the viewer saw it, in its order: the release-1 app up before the drive
    # came; aklited taking the drive and installing it alone (aklitectl watch: 100); the
    # reboot request at the logind stand-in; the reboot; the finalize before READY=1; the
    # release-2 app answering; the final status.
    assert in_order(
        out,
        "docker logs | hello from release 1",
        "aklitectl watch | state: idle",
        "/dev/loop",
        "aklited | ",
        "drive taken",
        "aklitectl watch | state: installing",
        f"aklitectl watch | {RELEASE_2} is deployed [100]",
        "logind | Reboot False",
        "the logind stand-in received: Reboot False",
        "aklitectl status | State: awaiting-reboot",
        "(safe to remove)",
        "bootloader | boots deployment",
        "state=finalizing",
        f"sd_notify | STATUS=finishing {RELEASE_2}",
        f"sd_notify | READY=1 STATUS=idle; running {RELEASE_2}",
        "/usr/share/demo/motd in the booted rootfs: Welcome to release 2",
        "docker logs | hello from release 2",
        "aklitectl status | State: idle",
        f"aklitectl status | Current target: {RELEASE_2} (version 2)",
        "aklitectl status | Pending target: none",
        f"aklitectl status | Last result: 0 {RELEASE_2} is now current",
        "Demo finished: the device runs release 2; nothing is left behind",
    ), out
    assert "[ ]" not in out and "left behind:" not in out, out

    # Nothing is left: the demo checks it itself; this looks again from outside.
    match = re.search(r"^work directory: (\S+)$", out, re.MULTILINE)
    assert match, out
    work = match[1]
    assert not Path(work).exists()
    assert not [f for f in loop_backing_files() if f.startswith(f"{work}/")]
    mounts = Path("/proc/self/mounts").read_text().split("\n")
    assert not [m for m in mounts if f" {work}" in m]
    assert not [cmd for cmd in processes().values() if work in cmd]
    assert udevd_pids() <= udevd_before
