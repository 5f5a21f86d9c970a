"""Writing back a file system while a copy goes on."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from aklited.host import writeback
from aklited.host.writeback import writing_back


class Recorder:
    """A sync that notes the descriptors it is given; ``calls`` is set from the 2nd on."""

    def __init__(self, error: OSError | None = None) -> None:
        self.fds: list[int] = []
        self.modes: list[int] = []
        self.calls = threading.Event()
        self._error = error

    def __call__(self, fd: int) -> None:
        self.fds.append(fd)
        self.modes.append(os.fstat(fd).st_mode)
        if len(self.fds) >= 2 or self._error is not None:
            self.calls.set()
        if self._error is not None:
            raise self._error


def names(fd: int, directory: Path) -> bool:
    """Whether ``fd`` is open on ``directory`` (a number closed may be taken again since)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == str(directory)
    except FileNotFoundError:
        return False


async def test_the_file_system_is_written_back_again_and_again_until_the_end(
    tmp_path: Path,
) -> None:
    sync = Recorder()

    async with writing_back(tmp_path, every_s=0, sync=sync):
        await asyncio.to_thread(sync.calls.wait)

    calls = len(sync.fds)
    assert calls >= 2
    assert len(set(sync.fds)) == 1  # one descriptor, of the directory given
    assert all(mode == os.stat(tmp_path).st_mode for mode in sync.modes)
    await asyncio.sleep(0)
    assert len(sync.fds) == calls  # the thread ended with the block
    assert not await asyncio.to_thread(names, sync.fds[0], tmp_path)  # and closed its fd


async def test_a_sync_that_fails_ends_the_writing_back_not_the_work(tmp_path: Path) -> None:
    sync = Recorder(OSError(5, "Input/output error"))

    with capture_logs() as logs:
        async with writing_back(tmp_path, every_s=0, sync=sync):
            await asyncio.to_thread(sync.calls.wait)
            done = "the work inside went on"

    assert done
    assert len(sync.fds) == 1
    assert [e["event"] for e in logs] == ["writing back beside the copy stopped"]


async def test_a_directory_that_cannot_be_opened_leaves_the_work_to_its_own_sync(
    tmp_path: Path,
) -> None:
    sync = Recorder()

    with capture_logs() as logs:
        async with writing_back(tmp_path / "gone", every_s=0, sync=sync):
            pass

    assert sync.fds == []
    assert logs[0]["event"] == "cannot write back beside the copy"


async def test_the_c_library_s_syncfs_writes_back_a_real_file_system(tmp_path: Path) -> None:
    sync = await asyncio.to_thread(writeback._libc_syncfs)
    assert sync is not None
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        await asyncio.to_thread(sync, fd)  # returns once written back
        with pytest.raises(OSError) as bad:
            await asyncio.to_thread(sync, 1 << 20)  # no such descriptor
        assert bad.value.errno == errno.EBADF
    finally:
        os.close(fd)
