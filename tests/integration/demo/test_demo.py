"""`make demo` stays true: the simulated device takes the update end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.root, pytest.mark.docker, pytest.mark.ostree]


def test_demo_updates_the_simulated_device() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "aklited_sim.demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "(exit code 16)" in out  # check: an update is available
    assert "(exit code 100)" in out  # install: reboot, then run
    assert "is now current [0]" in out  # run after the reboot
    assert "hello: running" in out
    assert "app output: hello from release 2" in out
    assert "Demo finished: the device runs release 2" in out
