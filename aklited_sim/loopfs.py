"""A loop-mounted ext4 image: a "USB drive" or a small disk for tests and benchmarks.

Usage::

    with loop_ext4(tmp_path / "stick.img", size_mib=64, mountpoint=tmp_path / "stick") as fs:
        (fs.mountpoint / "file").write_text("hello")

The image is sparse; the loop device is allocated with ``losetup -f --show`` and only the
device attached here is ever detached. On exit (also after a failure in the body or half-way
through setting up) the filesystem is unmounted and the device detached.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class LoopFs:
    """A mounted loop filesystem."""

    image: Path
    device: str
    mountpoint: Path

    def remount(self, *, options: str) -> None:
        """Remount with other options, e.g. ``"ro,nosuid,nodev,noexec"`` for a bundle drive."""
        _run(["mount", "-o", f"remount,{options}", str(self.mountpoint)])


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


@contextlib.contextmanager
def loop_ext4(
    image: Path,
    *,
    size_mib: int,
    mountpoint: Path,
    label: str = "AKLITETEST",
    mount_options: str | None = None,
) -> Iterator[LoopFs]:
    """Create a sparse ext4 image, attach it to a free loop device and mount it.

    Args:
        image: where the image file is created (replaced if it exists).
        size_mib: apparent size of the image in MiB.
        mountpoint: directory to mount on (created if missing).
        label: ext4 volume label.
        mount_options: ``mount -o`` options, e.g. ``"ro,nosuid,nodev,noexec"``.

    Yields:
        The mounted filesystem.
    """
    image.parent.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as sparse:
        sparse.truncate(size_mib * 1024 * 1024)
    # Small images get 1 KiB blocks by default; 4 KiB blocks behave like a real drive.
    _run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-L", label, str(image)])
    device = _run(["losetup", "-f", "--show", str(image)])
    mounted = False
    try:
        mountpoint.mkdir(parents=True, exist_ok=True)
        argv = ["mount", "-t", "ext4"]
        if mount_options:
            argv += ["-o", mount_options]
        _run([*argv, device, str(mountpoint)])
        mounted = True
        yield LoopFs(image=image, device=device, mountpoint=mountpoint)
    finally:
        try:
            if mounted:
                # A lazy unmount would leave the device busy; a process still inside is a bug.
                _run(["umount", str(mountpoint)])
        finally:
            _run(["losetup", "-d", device])
            _wait_detached(image)


def _wait_detached(image: Path, *, timeout_s: float = 30.0) -> None:
    """Until no loop device is attached to ``image``.

    ``losetup -d`` only marks the device for detaching while something still has it open
    (a probe udev started for the last event, a FUSE helper on its way out); the kernel
    lets go once the last opener closes it.
    """
    deadline = time.monotonic() + timeout_s
    while _run(["losetup", "-j", str(image)]):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{image}: still attached {timeout_s:.0f} s after losetup -d")
        time.sleep(0.02)
