from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aklited.errors import LockError
from aklited.host.current_target import write_current_target
from aklited.host.files import atomic_write
from aklited.host.lock import UpdateLock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aklited.host.lock import UpdateLock
    lock = UpdateLock(Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_lock_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "aklite.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        with pytest.raises(LockError, match="another aklite tool holds the update lock"):
            UpdateLock(path).acquire()
        # a holder killed with SIGKILL does not wedge the lock
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        with UpdateLock(path):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout:
            holder.stdout.close()


def test_lock_is_exclusive_within_a_process(tmp_path: Path) -> None:
    path = tmp_path / "aklite.lock"
    with UpdateLock(path), pytest.raises(LockError):
        UpdateLock(path).acquire()
    with UpdateLock(path):
        pass


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "sub/file"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file"]


def test_current_target_is_sourceable_by_sh(tmp_path: Path) -> None:
    path = tmp_path / "current-target"
    write_current_target(
        path,
        name="rpi4-lmp-42",
        version=42,
        custom={
            "lmp-manifest-sha": "abc",
            "containers-sha": 'evil"$(touch pwned)`x`',
            "meta-subscriber-overrides-sha": "def",
        },
        tag="main",
    )
    out = subprocess.run(
        [
            "sh",
            "-c",
            f'. "{path}"; printf "%s|%s|%s|%s|%s" "$TARGET_NAME" "$CUSTOM_VERSION" '
            '"$LMP_MANIFEST_SHA" "$CONTAINERS_SHA" "$TAG"',
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert out == 'rpi4-lmp-42|42|abc|evil"$(touch pwned)`x`|main'
    assert not (tmp_path / "pwned").exists()
