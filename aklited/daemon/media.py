"""Removable drives as they come and go, and the bundle a drive holds.

udev, not the kernel, is the source of events: only once udev's rules have run does a
device carry what it holds (``ID_FS_*``) and whether aklited's rule chose it
(``AKLITED_MEDIA=1``). Which devices may bring an update is then a rule an integrator can
change on the device, not a decision buried in code.

A drive announces itself in more than one way: ``add`` when a stick is plugged in,
``change`` when a card goes into a reader or a loop device gets a backing file, often
several of each, and it is also found by the enumeration at start (coldplug), which
overlaps the first events on purpose so that nothing plugged in meanwhile is missed. A
table of the drives present turns all of that into exactly one "added" and one "removed"
per drive, so the daemon never mounts a drive twice nor misses that it left.

The netlink socket is read on the event loop itself, so there is no thread to stop and no
event waits behind one. The queue towards the daemon is bounded: when the daemon falls
behind, reading stops and the kernel holds the events; should its buffer overflow, the
table is rebuilt from a fresh enumeration rather than trusted across the gap.

Every byte of a drive was chosen by whoever wrote it, so bundle discovery reads it only
through :class:`~aklited.drivefs.BundleFiles`: no link leads it off the drive, no listing
is unbounded, and it never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import stat
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Self

import pyudev
import structlog

from aklited.drivefs import BundleFiles, DriveIOError, MissingEntryError, UnsafeEntryError
from aklited.errors import MediaError

log = structlog.get_logger(__name__)

Properties = Mapping[str, str]
Accept = Callable[[Properties], bool]

# Who runs the monitor may lack CAP_NET_ADMIN to raise it; then the kernel default stays.
RECEIVE_BUFFER_BYTES = 8 * 1024 * 1024
# No USB hub holds more drives; the daemon handles each event in microseconds.
DEFAULT_QUEUE_SIZE = 64
# A bundle is the drive's root or a directory in it; a root with more entries than this
# is not a drive someone prepared for an update.
MAX_ROOT_ENTRIES = 4096

BUNDLE_METADATA = "tuf"
BUNDLE_CONTENT = ("ostree_repo", "apps")


class AmbiguousBundleError(MediaError):
    """A drive holds more than one bundle: which one the user meant is not for us to guess."""


def tagged_for_aklited(properties: Properties) -> bool:
    """The default selection: aklited's udev rule tagged the device (``AKLITED_MEDIA=1``)."""
    return properties.get("AKLITED_MEDIA") == "1"


@dataclass(frozen=True, slots=True)
class Drive:
    """A block device (a whole disk or a partition) holding a filesystem.

    ``label`` and ``uuid`` are what the drive claims (for people and logs); ``sysname``,
    the kernel's name for the device, is what names its mount directory.
    """

    devnode: str
    sysname: str
    fs_type: str
    label: str
    uuid: str
    kind: Literal["disk", "partition"]
    # The kernel numbers every medium it sees; the same devnode with another number is
    # another drive (a card swapped in a reader, a loop device given another image).
    diskseq: str = ""


@dataclass(frozen=True, slots=True)
class DriveAdded:
    drive: Drive


@dataclass(frozen=True, slots=True)
class DriveRemoved:
    devnode: str


MediaEvent = DriveAdded | DriveRemoved


def drive_from_properties(
    properties: Properties, accept: Accept = tagged_for_aklited
) -> Drive | None:
    """The drive udev's properties describe, or None when they describe no usable drive.

    A device counts when it is a block disk or partition with a device node, holds a
    filesystem (``ID_FS_USAGE=filesystem``; a partition table or a RAID member does not)
    and ``accept`` chooses it.
    """
    devnode = properties.get("DEVNAME", "")
    kind = properties.get("DEVTYPE", "")
    if properties.get("SUBSYSTEM") != "block" or not devnode.startswith("/dev/"):
        return None
    if kind not in ("disk", "partition"):
        return None
    fs_type = properties.get("ID_FS_TYPE", "")
    if properties.get("ID_FS_USAGE") != "filesystem" or not fs_type:
        return None
    if not accept(properties):
        return None
    sysname = properties.get("DEVPATH", "").rpartition("/")[2] or devnode.rpartition("/")[2]
    return Drive(
        devnode=devnode,
        sysname=sysname,
        fs_type=fs_type,
        label=properties.get("ID_FS_LABEL", ""),
        uuid=properties.get("ID_FS_UUID", ""),
        kind="partition" if kind == "partition" else "disk",
        diskseq=properties.get("DISKSEQ", ""),
    )


class DriveTable:
    """The drives present, by devnode; each update says what changed as events."""

    def __init__(self, accept: Accept = tagged_for_aklited) -> None:
        self._accept = accept
        self._drives: dict[str, Drive] = {}

    @property
    def drives(self) -> Mapping[str, Drive]:
        return MappingProxyType(self._drives)

    def apply(self, action: str, properties: Properties) -> list[MediaEvent]:
        """One udev event. At most two events come out (a new medium replacing another)."""
        devnode = properties.get("DEVNAME", "")
        if not devnode:
            return []
        if action == "remove":
            return self._set(devnode, None)
        if action in ("add", "change"):
            return self._set(devnode, drive_from_properties(properties, self._accept))
        return []  # move, bind, online...: the medium itself did not change

    def replace_all(self, present: Iterable[Drive]) -> list[MediaEvent]:
        """Make the table ``present`` (an enumeration): removals first, then additions."""
        wanted = {drive.devnode: drive for drive in present}
        events: list[MediaEvent] = []
        for devnode in sorted(self._drives.keys() - wanted.keys()):
            events += self._set(devnode, None)
        for devnode in sorted(wanted):
            events += self._set(devnode, wanted[devnode])
        return events

    def _set(self, devnode: str, drive: Drive | None) -> list[MediaEvent]:
        known = self._drives.get(devnode)
        if known == drive:
            return []
        events: list[MediaEvent] = []
        if known is not None:
            del self._drives[devnode]
            events.append(DriveRemoved(devnode))
        if drive is not None:
            self._drives[devnode] = drive
            events.append(DriveAdded(drive))
        return events


def _log_event(event: MediaEvent) -> None:
    if isinstance(event, DriveAdded):
        d = event.drive
        log.info("drive seen", devnode=d.devnode, label=d.label, fs_type=d.fs_type, kind=d.kind)
    else:
        log.info("drive removed", devnode=event.devnode)


def _enumerate(context: Any) -> list[dict[str, str]]:
    """The properties of every block device udev knows (reads sysfs and udev's database)."""
    return [dict(device.properties) for device in context.list_devices(subsystem="block")]


def _open_monitor(receive_buffer_bytes: int) -> tuple[Any, Any, list[dict[str, str]]]:
    # Context() loads libudev and reads udev.conf; the monitor checks for a running udevd.
    context = pyudev.Context()
    monitor = pyudev.Monitor.from_netlink(context, "udev")
    monitor.filter_by("block")
    try:
        monitor.set_receive_buffer_size(receive_buffer_bytes)
    except OSError as e:
        log.debug("udev receive buffer left as is", reason=e.strerror)
    # Listening before enumerating: a drive plugged in meanwhile is in one or the other.
    monitor.start()
    return context, monitor, _enumerate(context)


class MediaWatcher:
    """Drives arriving and leaving, as :class:`DriveAdded` / :class:`DriveRemoved`.

    Usage::

        async with MediaWatcher() as watcher:
            async for event in watcher.events():
                ...

    The drives present at start come first, as :class:`DriveAdded`. ``events()`` ends
    when the watcher is closed. One consumer at a time.

    Args:
        accept: which devices count, given their udev properties (a filesystem is always
            required); by default those aklited's udev rule tagged.
        queue_size: events held for a consumer that falls behind (at least 2).
        receive_buffer_bytes: the kernel's buffer for events not read yet; beyond it,
            events are lost and the drives are enumerated afresh.
    """

    def __init__(
        self,
        *,
        accept: Accept = tagged_for_aklited,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        receive_buffer_bytes: int = RECEIVE_BUFFER_BYTES,
    ) -> None:
        if queue_size < 2:
            raise ValueError("queue_size must be at least 2: one event may yield two")
        self._accept = accept
        self._receive_buffer_bytes = receive_buffer_bytes
        self._table = DriveTable(accept)
        self._queue: asyncio.Queue[MediaEvent | None] = asyncio.Queue(queue_size)
        self._present_at_start: deque[MediaEvent] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: Any = None
        self._monitor: Any = None
        self._reading = False
        self._resync: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def drives(self) -> Mapping[str, Drive]:
        """The drives present now, by devnode (ahead of the events not yet consumed)."""
        return self._table.drives

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        try:
            self._context, self._monitor, present = await asyncio.to_thread(
                _open_monitor, self._receive_buffer_bytes
            )
        except (OSError, ImportError) as e:
            raise MediaError(f"cannot watch udev for drives: {e}") from e
        for event in self._table.replace_all(_drives(present, self._accept)):
            _log_event(event)
            self._present_at_start.append(event)
        self._resume()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching; a consumer in ``events()`` sees the end."""
        if self._closed:
            return
        self._closed = True
        self._pause()
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
            self._resync = None
        # libudev closes the socket when its last reference goes.
        self._monitor = None
        self._context = None
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def events(self) -> AsyncIterator[MediaEvent]:
        """Every change, in order, until the watcher is closed."""
        while self._present_at_start:
            yield self._present_at_start.popleft()
        while not (self._closed and self._queue.empty()):
            event = await self._queue.get()
            if event is None:
                return
            if not self._reading and self._resync is None and not self._closed:
                self._resume()
            yield event

    # -- the socket -----------------------------------------------------------------------

    def _resume(self) -> None:
        if self._reading or self._closed or self._loop is None:
            return
        self._loop.add_reader(self._monitor.fileno(), self._on_readable)
        self._reading = True

    def _pause(self) -> None:
        if self._reading and self._loop is not None and self._monitor is not None:
            self._loop.remove_reader(self._monitor.fileno())
        self._reading = False

    def _on_readable(self) -> None:
        while self._reading:
            if self._queue.maxsize - self._queue.qsize() < 2:
                self._pause()  # the consumer resumes reading as it takes events
                return
            try:
                device = self._monitor.poll(0)
            except OSError as e:
                # ENOBUFS: the kernel dropped events this socket had no room for.
                log.warning("udev events lost: reading the drives afresh", reason=e.strerror)
                self._pause()
                self._resync = asyncio.get_running_loop().create_task(self._read_afresh())
                return
            if device is None:
                return
            for event in self._table.apply(device.action or "", dict(device.properties)):
                _log_event(event)
                self._queue.put_nowait(event)

    async def _read_afresh(self) -> None:
        try:
            present = await asyncio.to_thread(_enumerate, self._context)
        except OSError as e:
            log.warning("drives cannot be enumerated: the table stays as it was", reason=str(e))
        else:
            for event in self._table.replace_all(_drives(present, self._accept)):
                _log_event(event)
                await self._queue.put(event)
        self._resync = None
        self._resume()


def _drives(present: Iterable[Properties], accept: Accept) -> list[Drive]:
    drives = (drive_from_properties(props, accept) for props in present)
    return [drive for drive in drives if drive is not None]


# -- bundle discovery ---------------------------------------------------------------------


async def find_bundles(mountpoint: Path) -> list[Path]:
    """Every bundle on a mounted drive: its root, or else the directories right under it.

    A bundle is a directory holding ``tuf/`` and ``ostree_repo/`` or ``apps/`` (or both).
    Links are followed only inside the candidate directory; a candidate that is itself a
    link, or whose entries lead off it, is skipped.

    Raises:
        MediaError: the drive cannot be read, or its root holds too many entries to list.
    """
    return await asyncio.to_thread(_find_bundles, mountpoint)


async def find_bundle(mountpoint: Path) -> Path | None:
    """The one bundle on a mounted drive, or None when it holds none.

    Raises:
        AmbiguousBundleError: it holds several.
        MediaError: as :func:`find_bundles`.
    """
    found = await find_bundles(mountpoint)
    if len(found) > 1:
        names = ", ".join(path.name for path in found)
        raise AmbiguousBundleError(
            f"{mountpoint}: {len(found)} bundles on one drive ({names}): keep only one"
        )
    return found[0] if found else None


def _find_bundles(mountpoint: Path) -> list[Path]:
    try:
        if _is_bundle(mountpoint):
            return [mountpoint]
        with BundleFiles(mountpoint) as drive:
            try:
                names = drive.list_dir("", limit=MAX_ROOT_ENTRIES)
            except (MissingEntryError, UnsafeEntryError) as e:
                raise MediaError(f"{mountpoint}: drive root {e.reason}") from e
            found: list[Path] = []
            for name in names:
                try:
                    entry = drive.lstat(name)
                except (MissingEntryError, UnsafeEntryError):
                    continue
                # A link is not followed even when it stays on the drive: the bundle's
                # own reader would start from where it leads, so it is not one level down.
                if stat.S_ISDIR(entry.st_mode) and _is_bundle(mountpoint / name):
                    found.append(mountpoint / name)
            return found
    except DriveIOError as e:
        raise MediaError(f"{mountpoint}: drive cannot be read: {e}") from e


def _is_bundle(root: Path) -> bool:
    with BundleFiles(root) as files:
        try:
            return files.is_dir(BUNDLE_METADATA) and any(
                files.is_dir(name) for name in BUNDLE_CONTENT
            )
        except UnsafeEntryError as e:
            log.warning("bundle candidate refused", path=str(root), reason=str(e))
            return False
