"""What a stopped ostree staged is removed, as ostree's own clean-up would remove it: never
a staging directory another ostree holds (it locks ``<dir>-lock`` while writing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aklited.rootfs.sysroot import _remove_staging

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.lockf(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


def test_only_staging_no_ostree_holds_is_removed(tmp_path: Path) -> None:
    tmp = tmp_path / "repo" / "tmp"
    for name in ("staging-left", "staging-busy"):
        (tmp / name).mkdir(parents=True)
        (tmp / name / "object").write_bytes(b"x")
    (tmp / "staging-left-lock").touch()
    (tmp / "cache").mkdir()
    (tmp / "staging-link").symlink_to(tmp / "cache")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp / "staging-busy-lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"

        assert _remove_staging(tmp_path / "repo") == 1
    finally:
        holder.communicate("")

    left = sorted(p.name for p in tmp.iterdir())
    assert left == ["cache", "staging-busy", "staging-busy-lock", "staging-link"]
    assert (tmp / "staging-busy" / "object").read_bytes() == b"x"


def test_a_repo_without_tmp_has_nothing_staged(tmp_path: Path) -> None:
    assert _remove_staging(tmp_path) == 0
