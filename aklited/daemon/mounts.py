"""Mounting a stranger's drive so that nothing on it can act on the device.

The drive is mounted read-only, so nothing the daemon does can alter what the user brought,
and ``nosuid,nodev,noexec``, so nothing on it can become a setuid program, a device node
onto the host's memory or disks, or a program run by mistake. Those flags are then read
back from the kernel's own record (``/proc/self/mountinfo``) rather than trusted to the
mount helper: exfat-fuse, for one, drops ``noexec`` without a word, so its mount is
re-bound with the flags and checked like any other. A mount that still lacks one is
undone and refused. Every mount is also re-bound ``nosymfollow`` where the kernel can:
then no link on the drive is followed by anyone, ostree included.

The kernel mounts what it has a driver for; a FUSE helper is only the fallback for FAT
and exFAT on kernels built without them, since it parses hostile data in a root process.
The mount directory is named after the kernel's device name, never the label: the label
is the drive's to choose, and ``../../etc`` is a valid one.

Whatever ends the mount's use (its end, an error, a cancellation) unmounts it and removes
its directory; when the filesystem is busy it is detached lazily, with a warning, rather
than left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import stat
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from aklited.daemon.media import Drive
from aklited.errors import MediaError
from aklited.tasks import to_completion

log = structlog.get_logger(__name__)

MOUNT_OPTIONS = "ro,nosuid,nodev,noexec"
REQUIRED_FLAGS = frozenset(MOUNT_OPTIONS.split(","))
# Asked for as well, not required (see _rebind).
NO_SYMLINKS = "nosymfollow"
MOUNTINFO = Path("/proc/self/mountinfo")
FILESYSTEMS = Path("/proc/filesystems")

# A slow stick (or a FUSE helper reading its FAT) may take a while, never a minute.
MOUNT_TIMEOUT_S = 60.0
UNMOUNT_TIMEOUT_S = 30.0
# What a helper prints is for a one-line message: keep its start, drain the rest.
_STDERR_KEPT = 16 * 1024

_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.+-]")
_MAX_NAME = 64
# mountinfo escapes these four as \ooo.
_MOUNTINFO_ESCAPE = re.compile(r"\\([0-7]{3})")


class UnsafeMountError(MediaError):
    """The mount lacks a protection it must have (ro, nosuid, nodev, noexec): refused."""


class UnsupportedFilesystemError(MediaError):
    """Neither the kernel nor an installed FUSE helper can mount the drive's filesystem."""


class DriveInUseError(MediaError):
    """The device is mounted already (the system's own disk, another automounter): it is
    left alone."""


@dataclass(frozen=True, slots=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo``."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    options: frozenset[str]
    fs_type: str
    source: str
    super_options: frozenset[str]


@dataclass(frozen=True, slots=True)
class MountPlan:
    """How a filesystem is mounted: the command and what the kernel will then report."""

    argv: tuple[str, ...]
    fs_type: str  # as mountinfo shows it, e.g. "ext4", "fuse.fusefat", "fuseblk"
    helper: str  # "kernel" or the FUSE program
    # The helper ignores some of the options: bind-remount the mount with them after.
    rebind: bool = False


@dataclass(frozen=True, slots=True)
class MountedDrive:
    """A drive mounted read-only under the media root."""

    drive: Drive
    mountpoint: Path
    fs_type: str
    helper: str


# -- pure parts ---------------------------------------------------------------------------


def _unescape(field: str) -> str:
    return _MOUNTINFO_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The entries of a ``/proc/<pid>/mountinfo`` text, in its order (a mount stacked on
    another comes after it). Malformed lines are skipped."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            dash = fields.index("-", 6)
            major, minor = fields[2].split(":")
            entries.append(
                MountEntry(
                    mount_id=int(fields[0]),
                    parent_id=int(fields[1]),
                    major=int(major),
                    minor=int(minor),
                    root=_unescape(fields[3]),
                    mount_point=_unescape(fields[4]),
                    options=frozenset(fields[5].split(",")),
                    fs_type=_unescape(fields[dash + 1]),
                    source=_unescape(fields[dash + 2]),
                    super_options=frozenset(fields[dash + 3].split(",")),
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def find_mount(entries: Iterable[MountEntry], mount_point: Path | str) -> MountEntry | None:
    """The mount visible at ``mount_point`` (the last one stacked there), or None."""
    point = os.fspath(mount_point)
    found: MountEntry | None = None
    for entry in entries:
        if entry.mount_point == point:
            found = entry
    return found


def mounts_of(entries: Iterable[MountEntry], rdev: int) -> list[MountEntry]:
    """The mounts of the block device numbered ``rdev`` (``st_rdev`` of its node)."""
    return [e for e in entries if (e.major, e.minor) == (os.major(rdev), os.minor(rdev))]


def missing_flags(entry: MountEntry, required: frozenset[str] = REQUIRED_FLAGS) -> frozenset[str]:
    """The protections ``entry``'s per-mount options lack (empty: the mount is safe)."""
    return required - entry.options


def parse_filesystems(text: str) -> frozenset[str]:
    """The block-device filesystems the kernel can mount, from ``/proc/filesystems``
    (``nodev`` ones need no device; ``fuseblk`` needs a helper)."""
    names: set[str] = set()
    for line in text.splitlines():
        flag, _, name = line.rpartition("\t")
        if name.strip() and not flag.strip() and name.strip() != "fuseblk":
            names.add(name.strip())
    return frozenset(names)


def safe_dir_name(sysname: str) -> str:
    """The mount directory's name for a device: its kernel name, with anything that is not
    a plain file name character replaced, so no name reaches outside the media root.

    Raises:
        MediaError: nothing usable is left (e.g. ``..``).
    """
    name = _UNSAFE_NAME_CHARS.sub("_", sysname)[:_MAX_NAME].lstrip(".")
    if not name:
        raise MediaError(f"{sysname!r}: no usable mount directory name")
    return name


def mount_plan(
    drive: Drive,
    mountpoint: Path,
    *,
    kernel_filesystems: frozenset[str],
    which: Callable[[str], str | None] = shutil.which,
) -> MountPlan:
    """How to mount ``drive`` on ``mountpoint`` read-only, nosuid, nodev, noexec.

    Raises:
        UnsupportedFilesystemError: no driver or helper for its filesystem.
    """
    target = os.fspath(mountpoint)
    argv: tuple[str, ...]
    if drive.fs_type in kernel_filesystems:
        argv = ("mount", "-t", drive.fs_type, "-o", MOUNT_OPTIONS, drive.devnode, target)
        return MountPlan(argv=argv, fs_type=drive.fs_type, helper="kernel")
    if drive.fs_type == "vfat" and which("fusefat"):
        argv = ("fusefat", "-o", MOUNT_OPTIONS, drive.devnode, target)
        return MountPlan(argv=argv, fs_type="fuse.fusefat", helper="fusefat")
    if drive.fs_type == "exfat" and which("mount.exfat-fuse"):
        argv = ("mount.exfat-fuse", "-o", MOUNT_OPTIONS, drive.devnode, target)
        return MountPlan(argv=argv, fs_type="fuseblk", helper="mount.exfat-fuse", rebind=True)
    raise UnsupportedFilesystemError(
        f"{drive.devnode}: cannot mount {drive.fs_type}: no kernel driver or FUSE helper for it"
    )


# -- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ran:
    returncode: int
    stderr: str

    def detail(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


async def _drain(stream: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk[: max(0, _STDERR_KEPT - len(kept))]
    return bytes(kept)


async def _run(argv: tuple[str, ...], *, timeout_s: float, what: str) -> _Ran:
    """Run a command without a shell, wait at most ``timeout_s``.

    Raises:
        MediaError: it cannot be started or ran out of time (it is killed).
    """
    log.debug("media command", argv=list(argv))
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as e:
        raise MediaError(f"{what}: cannot run {argv[0]}: {e.strerror}") from e
    assert proc.stderr is not None
    reader = asyncio.ensure_future(_drain(proc.stderr))
    try:
        async with asyncio.timeout(timeout_s):
            returncode = await proc.wait()
        # The FUSE server a helper leaves behind could hold stderr open: take what came.
        done, _ = await asyncio.wait({reader}, timeout=2.0)
        stderr = reader.result() if done else b""
    except TimeoutError as e:
        raise MediaError(f"{what}: {argv[0]} did not finish in {timeout_s:g} s") from e
    finally:
        reader.cancel()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return _Ran(returncode=returncode, stderr=stderr.decode("utf-8", errors="replace"))


def _read_mounts() -> list[MountEntry]:
    return parse_mountinfo(MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape"))


def _mounts_of_device(devnode: str, what: str) -> list[MountEntry]:
    try:
        info = Path(devnode).stat()
    except OSError as e:
        raise MediaError(f"{what}: {e.strerror}") from e
    if not stat.S_ISBLK(info.st_mode):
        raise MediaError(f"{what}: not a block device")
    return mounts_of(_read_mounts(), info.st_rdev)


async def _rebind(mountpoint: Path, plan: MountPlan, *, timeout_s: float, what: str) -> None:
    """Bind the mount again with ``nosymfollow``, where the kernel can: then it follows no
    link on the drive for anyone, and ostree may copy while the bundle is walked.

    ``nosymfollow`` is wanted, not required (Linux 5.10, util-linux 2.38): without it the
    bundle is walked before ostree reads it. A helper that drops flags (``plan.rebind``)
    gets all of them back, required; any other mount keeps the flags it has, for the check
    after this to judge.
    """
    target = os.fspath(mountpoint)
    if plan.rebind:
        flags = MOUNT_OPTIONS
    elif (entry := await _mount_at(mountpoint)) is not None:
        flags = ",".join(sorted(entry.options))
    else:
        return  # nothing mounted: the check after this says so
    try:
        ran = await _run(
            ("mount", "-o", f"remount,bind,{flags},{NO_SYMLINKS}", target),
            timeout_s=timeout_s,
            what=what,
        )
        if ran.returncode == 0:
            return
        failure = ran.detail()
    except MediaError as e:  # timed out, or mount could not run: wanted, not required
        if plan.rebind:
            raise
        failure = str(e)
    log.info("drive mounted without nosymfollow", mountpoint=target, error=failure)
    if plan.rebind:
        ran = await _run(
            ("mount", "-o", f"remount,bind,{flags}", target), timeout_s=timeout_s, what=what
        )
        if ran.returncode != 0:
            raise UnsafeMountError(f"{what}: cannot add {MOUNT_OPTIONS}: {ran.detail()}")


async def _mount_at(mountpoint: Path) -> MountEntry | None:
    return find_mount(await asyncio.to_thread(_read_mounts), mountpoint)


def _make_mountpoint(media_root: Path, name: str) -> Path:
    try:
        # Only root reads the drives; a FUSE helper may open its mount to all users.
        media_root.mkdir(mode=0o700, parents=True, exist_ok=True)
        mountpoint = media_root.resolve(strict=True) / name
        try:
            mountpoint.mkdir(mode=0o700)
        except FileExistsError:
            if mountpoint.is_symlink() or not mountpoint.is_dir():
                raise MediaError(f"{mountpoint}: exists and is not a directory") from None
            if find_mount(_read_mounts(), mountpoint) is not None:
                raise MediaError(f"{mountpoint}: something is already mounted there") from None
            if any(mountpoint.iterdir()):
                raise MediaError(f"{mountpoint}: exists and is not empty") from None
    except OSError as e:
        raise MediaError(f"{media_root}: cannot create a mount directory: {e.strerror}") from e
    return mountpoint


def _remove_dir(mountpoint: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        mountpoint.rmdir()


# -- mount and unmount --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mount_drive(
    drive: Drive, media_root: Path, *, timeout_s: float = MOUNT_TIMEOUT_S
) -> AsyncIterator[MountedDrive]:
    """Mount ``drive`` read-only, nosuid, nodev, noexec under ``media_root``, for the block.

    Usage::

        async with mount_drive(drive, config.aklited.media_root) as mounted:
            bundle = await find_bundle(mounted.mountpoint)

    Raises:
        UnsupportedFilesystemError: nothing here can mount its filesystem.
        DriveInUseError: the device is mounted elsewhere already.
        UnsafeMountError: the mount lacks a protection (it was undone).
        MediaError: the mount directory or the mount failed, or, after the block, the
            drive could not be unmounted even lazily.
    """
    mountpoint = await asyncio.to_thread(_make_mountpoint, media_root, safe_dir_name(drive.sysname))
    try:
        mounted = await _mount(drive, mountpoint, timeout_s=timeout_s)
    except BaseException:
        # The refusal itself is the caller's to say (once, with what it does next).
        await to_completion(lambda: _release(drive, mountpoint, quiet=True))
        raise
    log.info(
        "drive mounted",
        devnode=drive.devnode,
        label=drive.label,
        fs_type=drive.fs_type,
        mountpoint=str(mountpoint),
        helper=mounted.helper,
    )
    try:
        yield mounted
    except BaseException:
        await to_completion(lambda: _release(drive, mountpoint, quiet=True))
        raise
    await to_completion(lambda: _release(drive, mountpoint, quiet=False))


async def _mount(drive: Drive, mountpoint: Path, *, timeout_s: float) -> MountedDrive:
    what = f"{drive.devnode} ({drive.fs_type})"
    try:
        kernel = parse_filesystems(await asyncio.to_thread(FILESYSTEMS.read_text))
    except OSError as e:
        raise MediaError(f"{what}: cannot read {FILESYSTEMS}: {e.strerror}") from e
    plan = await asyncio.to_thread(
        mount_plan, drive, mountpoint, kernel_filesystems=kernel, which=shutil.which
    )
    # A second, read-only mount of a disk the system uses (a root filesystem on a USB
    # disk) or of another automounter's drive is not ours to make.
    elsewhere = await asyncio.to_thread(_mounts_of_device, drive.devnode, what)
    if elsewhere:
        raise DriveInUseError(f"{what}: already mounted at {elsewhere[0].mount_point}")
    ran = await _run(plan.argv, timeout_s=timeout_s, what=what)
    if ran.returncode != 0:
        raise MediaError(f"{what}: mount failed: {ran.detail()}")
    await _rebind(mountpoint, plan, timeout_s=timeout_s, what=what)
    entry = await _mount_at(mountpoint)
    if entry is None:
        raise MediaError(f"{what}: {plan.helper} succeeded but nothing is mounted at {mountpoint}")
    if entry.fs_type != plan.fs_type:
        raise UnsafeMountError(
            f"{what}: {mountpoint} holds {entry.fs_type}, not the expected {plan.fs_type}"
        )
    missing = missing_flags(entry)
    if missing:
        raise UnsafeMountError(
            f"{what}: mount at {mountpoint} lacks {','.join(sorted(missing))}: refused"
        )
    return MountedDrive(
        drive=drive, mountpoint=mountpoint, fs_type=entry.fs_type, helper=plan.helper
    )


async def _release(drive: Drive, mountpoint: Path, *, quiet: bool) -> None:
    """Unmount whatever is at ``mountpoint`` and remove it. With ``quiet``, a failure is
    logged only: another error is already on its way to the caller."""
    fields = {"devnode": drive.devnode, "label": drive.label, "fs_type": drive.fs_type}
    try:
        await _unmount(mountpoint, fields)
        await asyncio.to_thread(_remove_dir, mountpoint)
    except (MediaError, OSError) as e:
        error = e if isinstance(e, MediaError) else MediaError(f"{mountpoint}: {e}")
        log.error(  # noqa: TRY400 (an expected failure: one line, no traceback)
            "drive left mounted", mountpoint=str(mountpoint), reason=str(error), **fields
        )
        if not quiet:
            raise error from e


async def _unmount(mountpoint: Path, fields: dict[str, str]) -> None:
    what = f"{fields['devnode']} at {mountpoint}"
    # Each round removes the top mount; one more may sit below (mounted on by someone else).
    for _ in range(4):
        if await _mount_at(mountpoint) is None:
            return
        try:
            ran = await _run(
                ("umount", os.fspath(mountpoint)), timeout_s=UNMOUNT_TIMEOUT_S, what=what
            )
            detail = "" if ran.returncode == 0 else ran.detail()
        except MediaError as e:
            detail = str(e)
        if not detail:
            log.info("drive unmounted", mountpoint=str(mountpoint), **fields)
            continue
        log.warning(
            "drive busy: detached lazily", mountpoint=str(mountpoint), reason=detail, **fields
        )
        ran = await _run(
            ("umount", "-l", os.fspath(mountpoint)), timeout_s=UNMOUNT_TIMEOUT_S, what=what
        )
        if ran.returncode != 0:
            raise MediaError(f"{what}: cannot unmount: {ran.detail()}")
    if await _mount_at(mountpoint) is not None:
        raise MediaError(f"{what}: still mounted after unmounting")


async def clear_media_root(media_root: Path) -> list[Path]:
    """Unmount and remove whatever a previous run left under ``media_root`` (after a
    crash), so drives start from a clean slate. Returns the mount points removed.

    Raises:
        MediaError: a mount could not be removed even lazily.
    """
    try:
        root = await asyncio.to_thread(media_root.resolve)
    except OSError as e:
        raise MediaError(f"{media_root}: {e.strerror}") from e
    entries = await asyncio.to_thread(_read_mounts)
    points = sorted(
        {Path(e.mount_point) for e in entries if Path(e.mount_point).parent == root},
        reverse=True,
    )
    for point in points:
        fields = {"devnode": "(left over)", "label": "", "fs_type": ""}
        for entry in entries:
            if entry.mount_point == os.fspath(point):
                fields = {"devnode": entry.source, "label": "", "fs_type": entry.fs_type}
        log.warning("stale drive mount", mountpoint=str(point), **fields)
        await to_completion(functools.partial(_unmount, point, fields))
        await asyncio.to_thread(_remove_dir, point)
    return points
