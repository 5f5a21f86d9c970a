from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aklited.errors import LockHeldError
from aklited.host.current_target import write_current_target
from aklited.host.files import atomic_write
from aklited.host.lock import UpdateLock

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(60)
    """
)


async def test_lock_held_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "aklite.lock"
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await holder.stdout.readline()).strip() == b"held"
        with pytest.raises(LockHeldError, match="another aklite tool holds the update lock"):
            async with UpdateLock(path).hold():
                pass
        # a holder killed with SIGKILL does not wedge the lock
        holder.send_signal(signal.SIGKILL)
        await holder.wait()
        async with UpdateLock(path).hold():
            pass
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


async def test_lock_is_exclusive_within_a_process(tmp_path: Path) -> None:
    path = tmp_path / "aklite.lock"
    async with UpdateLock(path).hold():
        with pytest.raises(LockHeldError):
            async with UpdateLock(path).hold():
                pass
    async with UpdateLock(path).hold():
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


async def test_a_cancelled_take_gives_the_lock_back(tmp_path: Path) -> None:
    path = tmp_path / "aklite.lock"
    lock = UpdateLock(path)
    # Cancelled before the worker thread has run: the thread takes the lock all the same,
    # and the lock must be free afterwards.
    entering = asyncio.ensure_future(lock.hold().__aenter__())
    await asyncio.sleep(0)
    entering.cancel()
    with pytest.raises(asyncio.CancelledError):
        await entering
    async with UpdateLock(path).hold():
        pass
