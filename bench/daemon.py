"""What the running aklited daemon costs: reaction to a drive, idle footprint, memory, leaks.

Every figure is taken on a whole simulated device (``aklited_sim.world``: an OSTree sysroot,
a system bus with systemd and logind stood in, systemd-udevd with aklited's rule extended to
loop devices) with aklited as its own process, against a baseline measured in the same run:

1. udev add -> State=verifying (aim < 300 ms). One rootfs-only device; one drive per run,
   each holding the next release (v2, v3, ...), all written before any daemon starts. A run:
   start aklited (the previous run's install is finished at start, as after a reboot), wait
   until its event loop polls its udev socket, then t0 and ``losetup`` (a loop device gets
   its backing file as a ``change`` event, a new one as ``add``). Baseline: when a pyudev
   monitor of this script sees that device's first event carrying ``ID_FS_TYPE`` and
   ``AKLITED_MEDIA=1``, i.e. when udev is done with it. aklited: when the PropertiesChanged
   saying State "verifying" arrives (subscribed before any drive; the state comes after
   mounting the drive, finding the bundle and checking its metadata). The verdict is on the
   time from udev's event. The install then runs to "awaiting-reboot", the drive is
   detached, udev settles, the device "reboots". Each run is a real, full install of a
   newer target: a bundle refused by the check never reaches "verifying".
2. Idle RSS and wake-ups (aim < 40 MiB; no wake-up but the watchdog's). aklited with
   ``WATCHDOG_USEC`` (30 s: a ping every 15 s), the window starting after its second ping.
   Wake-ups are the voluntary + involuntary context switches of all its threads over the
   window. Baseline: ``python3 -c "import asyncio; asyncio.run(asyncio.sleep(N))"`` over the
   same window, plus the watchdog pings expected in it.
3. Peak RSS during installs of 100 MiB, 500 MiB and 1 GiB of incompressible files (aim: flat,
   under 80 MiB). A fresh rootfs-only device and daemon per size; VmHWM is reset once the
   daemon is idle (``clear_refs``), the drive plugged in, and VmHWM read when the drive is
   safe to remove after "awaiting-reboot". That is the daemon's own process: its ostree
   children are sampled every 100 ms on the side. Baseline: the daemon's idle VmRSS.
4. Plug/unplug cycles of a drive without a bundle (aim: no growth in open fds or RSS): plug
   in, wait for its Media entry to be safe to remove, unplug, wait for the entry to go.
   Open fds and VmRSS after cycle 10 (the baseline), half-way and at the end; the rows hold
   the end's values to the baseline's plus a small allowance (2 fds, 1 MiB).

Verdicts are reported as rows (``bench/results.py``), not asserted: the exit status is 0 once
every figure is measured.

Run as root, never beside the daemon tests (its udev rule takes every loop device):
flock /tmp/aklited-udev.lock .venv/bin/python bench/daemon.py [--quick] [--rows FILE]
(--quick: 3 latency runs, a 20 s idle window, only the 100 MiB install, 40 cycles)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyudev

from aklited.log import configure_logging
from aklited_sim.daemon import RunningDaemon, polls_udev
from aklited_sim.factory import HWID, Release
from aklited_sim.loopfs import loop_ext4
from aklited_sim.signals import StatusWatch, drive_gone, drive_is, state_is
from aklited_sim.sysroot import commit_tree, make_tree, remove_tree, write_random_files
from aklited_sim.udev import settle
from aklited_sim.world import World, simulated_world
from bench.results import Row, add_rows_option, emit

SETTINGS = "reboot_delay_s = 0\nauto_reboot = false\n"
SAFETY_S = 120.0  # a safety net only: every wait is for an event
WATCHDOG_USEC = 30_000_000
PAYLOAD_FILE_MIB = 4
NEEDS_REBOOT = 100
PROPERTIES = "org.freedesktop.DBus.Properties"

LATENCY_AIM_MS = 300.0
IDLE_RSS_AIM_MIB = 40.0
PEAK_RSS_AIM_MIB = 80.0
# A peak that grows less than this from the smallest to the largest install is "flat".
FLAT_MIB = 8.0
# Python's allocator keeps a little after a burst of work; more than this over the cycles
# after the warm-up is growth.
CYCLE_RSS_NOISE_MIB = 1.0
# A sample may catch a socket or pipe of the cycle just ended not yet closed; a leak of one
# per cycle would show as tens.
CYCLE_FD_ALLOWANCE = 2


# ---- /proc --------------------------------------------------------------------------------


def read_status(path: Path) -> dict[str, str]:
    """A ``/proc/.../status`` file as a mapping."""
    fields: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def proc_status(pid: int) -> dict[str, str]:
    return read_status(Path(f"/proc/{pid}/status"))


def mib(pid: int, key: str) -> float:
    """A ``VmRSS``/``VmHWM``-style line of ``/proc/<pid>/status``, in MiB."""
    return int(proc_status(pid)[key].split()[0]) / 1024


def context_switches(pid: int) -> dict[int, int]:
    """Voluntary + involuntary context switches so far, per thread."""
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = read_status(task / "status")
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        counts[int(task.name)] = int(status["voluntary_ctxt_switches"]) + int(
            status["nonvoluntary_ctxt_switches"]
        )
    return counts


def switches_between(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    # A thread started in the window counts from zero; one that ended takes its count along.
    return sum(count - before.get(tid, 0) for tid, count in after.items())


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def reset_peak(pid: int) -> None:
    """VmHWM back to the current VmRSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5\n")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (this kernel has no ``/proc/<pid>/task/*/children``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


class ChildPeaks:
    """The largest VmHWM seen among the daemon's children (ostree, mount), sampled.

    A sample misses whatever a child allocates after it and before its exit, so this is a
    lower bound.
    """

    INTERVAL_S = 0.1

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self.command = ""
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            for child in descendants(self.pid):
                try:
                    status = proc_status(child)
                    peak = int(status.get("VmHWM", "0 kB").split()[0]) / 1024
                except (OSError, ValueError):
                    continue
                if peak > self.peak_mib:
                    self.peak_mib, self.command = peak, status.get("Name", "?")
            await asyncio.sleep(self.INTERVAL_S)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# ---- the daemon, its notifications, its signals, udev ---------------------------------------


class NotifyReader:
    """Reads the daemon's sd_notify datagrams the way systemd does, as they come.

    Unread, the socket holds 10 datagrams; after that every STATUS= line the daemon sends
    fails and is logged as a warning.
    """

    def __init__(self, running: RunningDaemon) -> None:
        self._sock = running.notifications.sock
        self.messages: list[tuple[float, str]] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self._sock, 4096)
            self.messages.append((time.perf_counter(), data.decode(errors="replace")))
            self._arrived.set()

    def pings(self, start: float = 0.0, end: float = float("inf")) -> int:
        return sum(
            1 for at, text in self.messages if start <= at < end and "WATCHDOG=1" in text.split()
        )

    async def until_pings(self, count: int, timeout_s: float) -> float:
        """When the ``count``-th watchdog ping arrived."""
        async with asyncio.timeout(timeout_s):
            while self.pings() < count:
                self._arrived.clear()
                await self._arrived.wait()
        return [at for at, text in self.messages if "WATCHDOG=1" in text.split()][count - 1]

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@dataclass
class Daemon:
    running: RunningDaemon
    notify: NotifyReader

    @property
    def pid(self) -> int:
        return self.running.process.pid

    def log_tail(self) -> str:
        return self.running.log()[-3000:]


@asynccontextmanager
async def aklited(
    world: World, name: str, *, extra_env: Mapping[str, str] | None = None
) -> AsyncIterator[Daemon]:
    """aklited on ``world``, ready and watching udev on entry, stopped on exit."""
    async with world.daemon(name, extra_env=extra_env) as running:
        daemon = Daemon(running, NotifyReader(running))
        try:
            async with asyncio.timeout(SAFETY_S):
                while not polls_udev(daemon.pid):
                    if running.process.returncode is not None:
                        raise RuntimeError(f"aklited exited:\n{daemon.log_tail()}")
                    await asyncio.sleep(0.01)  # no event says so: its /proc is polled
            yield daemon
        finally:
            await daemon.notify.stop()


class UdevWatch:
    """A libudev monitor of this script: when udev is done with a block device's event."""

    def __init__(self) -> None:
        self._monitor = pyudev.Monitor.from_netlink(pyudev.Context(), "udev")
        self._monitor.filter_by("block")
        self._monitor.start()
        self.events: list[tuple[float, str, dict[str, str]]] = []
        self._arrived = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._monitor.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        at = time.perf_counter()
        while (device := self._monitor.poll(0)) is not None:
            self.events.append((at, str(device.action), dict(device.properties)))
            self._arrived.set()

    def mark(self) -> int:
        return len(self.events)

    async def drive_ready(self, devnode: str, *, since: int) -> float:
        """When ``devnode``'s first event with a filesystem and aklited's tag arrived."""
        index = since
        async with asyncio.timeout(SAFETY_S):
            while True:
                while index < len(self.events):
                    at, action, props = self.events[index]
                    index += 1
                    if (
                        props.get("DEVNAME") == devnode
                        and action in ("add", "change")
                        and props.get("ID_FS_TYPE")
                        and props.get("AKLITED_MEDIA") == "1"
                    ):
                        return at
                self._arrived.clear()
                await self._arrived.wait()

    def close(self) -> None:
        self._loop.remove_reader(self._monitor.fileno())


def ms(seconds: float) -> float:
    return seconds * 1000


# ---- 1. udev add -> State=verifying ---------------------------------------------------------


@dataclass
class LatencyRun:
    udev_ms: float  # losetup -> udev's event
    seen_ms: float  # losetup -> the daemon lists the drive (Media "waiting")
    mounted_ms: float  # losetup -> Media "mounted"
    verifying_ms: float  # losetup -> State "verifying"


async def drive_latency(work: Path, runs: int) -> list[LatencyRun]:
    root = work / "latency"
    results: list[LatencyRun] = []
    async with simulated_world(root, apps=False, settings=SETTINGS) as w:
        assert w.drives is not None
        images = []
        for version in range(2, runs + 2):
            release = await w.factory.release(version)
            images.append(await w.write_drive(root / f"v{version}.img", [release]))
        watch = await StatusWatch.connect(w.bus_address)
        udev = UdevWatch()
        try:
            for index, image in enumerate(images):
                async with aklited(w, f"latency-{index}") as daemon:
                    since_bus, since_udev = watch.mark(), udev.mark()
                    t0 = time.perf_counter()
                    device = await asyncio.to_thread(w.drives.attach, image)
                    udev_at = await udev.drive_ready(device, since=since_udev)
                    verifying_at = await watch.first(state_is("verifying"), since=since_bus)
                    await watch.first(drive_is(device, safe_to_remove=True), since=since_bus)
                    seen_at = await watch.first(drive_is(device, state="waiting"), since=since_bus)
                    mounted_at = await watch.first(
                        drive_is(device, state="mounted"), since=since_bus
                    )
                    if watch.props.get("LastResult", [0])[0] != NEEDS_REBOOT:
                        raise RuntimeError(
                            f"install {index} ended with {watch.props.get('LastResult')}:\n"
                            f"{daemon.log_tail()}"
                        )
                    results.append(
                        LatencyRun(
                            udev_ms=ms(udev_at - t0),
                            seen_ms=ms(seen_at - t0),
                            mounted_ms=ms(mounted_at - t0),
                            verifying_ms=ms(verifying_at - t0),
                        )
                    )
                    await asyncio.to_thread(w.drives.detach, device)
                    await asyncio.to_thread(settle)
                await w.reboot()
        finally:
            udev.close()
            await watch.close()
    return results


# ---- 2. idle RSS and wake-ups --------------------------------------------------------------


@dataclass
class Idle:
    window_s: float
    rss_mib: float
    anon_mib: float
    file_mib: float
    threads: int
    switches: int
    pings: int
    baseline_rss_mib: float
    baseline_switches: int
    imports: ImportsRss

    @property
    def expected_pings(self) -> float:
        return self.window_s / (WATCHDOG_USEC / 1_000_000 / 2)

    def per_minute(self, count: float) -> float:
        return count * 60 / self.window_s


@dataclass(frozen=True)
class ImportsRss:
    """VmRSS of a bare interpreter once it imported the daemon's modules, nothing run."""

    with_rich_mib: float
    without_rich_mib: float


# structlog imports rich whenever it is installed; in this venv only import-linter brings it
# and a device install has none, so the imports are measured with and without it.
IMPORTS_CODE = """
import sys
if {block}:
    sys.modules["rich"] = None  # an ImportError for structlog, as on a device
import aklited.daemon.runner
print(open("/proc/self/status").read())
"""


async def imports_rss(*, block_rich: bool) -> float:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        IMPORTS_CODE.format(block=block_rich),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"importing the daemon's modules failed ({proc.returncode})")
    for line in out.decode().splitlines():
        key, _, value = line.partition(":")
        if key == "VmRSS":
            return int(value.split()[0]) / 1024
    raise RuntimeError("no VmRSS line")


async def idle_footprint(work: Path, window_s: float) -> Idle:
    imports = ImportsRss(
        with_rich_mib=await imports_rss(block_rich=False),
        without_rich_mib=await imports_rss(block_rich=True),
    )
    async with (
        simulated_world(work / "idle", apps=False, settings=SETTINGS) as w,
        aklited(w, "idle", extra_env={"WATCHDOG_USEC": str(WATCHDOG_USEC)}) as daemon,
    ):
        sleeper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"import asyncio; asyncio.run(asyncio.sleep({window_s + 60}))"
        )
        try:
            # The second ping comes half a watchdog interval after the start: long settled.
            second = await daemon.notify.until_pings(2, WATCHDOG_USEC / 1_000_000 + SAFETY_S)
            # The ping's own wake-up (back to sleep after sending) stays out of the window.
            await asyncio.sleep(max(0.0, second + 0.5 - time.perf_counter()))
            if sleeper.returncode is not None:
                raise RuntimeError(f"the baseline process exited with {sleeper.returncode}")
            start = time.perf_counter()
            before, baseline_before = context_switches(daemon.pid), context_switches(sleeper.pid)
            await asyncio.sleep(window_s)  # the measurement window itself
            after, baseline_after = context_switches(daemon.pid), context_switches(sleeper.pid)
            end = time.perf_counter()
            return Idle(
                window_s=end - start,
                rss_mib=mib(daemon.pid, "VmRSS"),
                anon_mib=mib(daemon.pid, "RssAnon"),
                file_mib=mib(daemon.pid, "RssFile"),
                threads=len(after),
                switches=switches_between(before, after),
                pings=daemon.notify.pings(start, end),
                baseline_rss_mib=mib(sleeper.pid, "VmRSS"),
                baseline_switches=switches_between(baseline_before, baseline_after),
                imports=imports,
            )
        finally:
            if sleeper.returncode is None:
                sleeper.kill()
            await sleeper.wait()


# ---- 3. peak RSS during installs -----------------------------------------------------------


@dataclass
class Peak:
    payload_mib: int
    idle_rss_mib: float
    peak_mib: float
    child_peak_mib: float
    child_command: str
    install_s: float
    copied_mib: float


def tree_size(root: Path) -> int:
    """Bytes in the files under ``root`` (each hard link counted once)."""
    seen: set[int] = set()
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(dirpath, name))
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_size
    return total


async def payload_release(w: World, version: int, payload_mib: int) -> Release:
    """A rootfs-only release carrying ``payload_mib`` of random files, built on disk (a 1 GiB
    ``files`` mapping would sit in this process's memory)."""
    tree = w.factory.root / f"tree-{version}"
    await make_tree(tree, version=str(version))
    await write_random_files(
        tree / "usr/share/payload",
        count=payload_mib // PAYLOAD_FILE_MIB,
        size=PAYLOAD_FILE_MIB * 1024 * 1024,
    )
    commit = await commit_tree(w.factory.repo, tree, subject=f"v{version}", version=str(version))
    await remove_tree(tree)
    release = Release(name=f"{HWID}-lmp-{version}", version=version, commit=commit, apps={})
    w.factory.releases[version] = release
    return release


async def install_peak(work: Path, payload_mib: int) -> Peak:
    root = work / f"install-{payload_mib}"
    try:
        async with simulated_world(root, apps=False, settings=SETTINGS) as w:
            release = await payload_release(w, 2, payload_mib)
            # Archive objects of random data are no smaller than the files.
            size = payload_mib + payload_mib // 4 + 128
            image = await w.write_drive(root / "usb.img", [release], size_mib=size)
            watch = await StatusWatch.connect(w.bus_address)
            try:
                async with aklited(w, f"install-{payload_mib}") as daemon:
                    return await measure_install(w, daemon, watch, image, payload_mib)
            finally:
                await watch.close()
    finally:
        await remove_tree(root)


async def measure_install(
    w: World, daemon: Daemon, watch: StatusWatch, image: Path, payload_mib: int
) -> Peak:
    assert w.drives is not None
    # What the install copied, to show the payload did go through the daemon's install.
    objects = w.sim.sysroot / "ostree/repo/objects"
    before = await asyncio.to_thread(tree_size, objects)
    idle = mib(daemon.pid, "VmRSS")
    reset_peak(daemon.pid)
    children = ChildPeaks(daemon.pid)
    try:
        since = watch.mark()
        started = time.perf_counter()
        device = await asyncio.to_thread(w.drives.attach, image)
        done = await watch.first(
            drive_is(device, safe_to_remove=True), since=since, timeout_s=SAFETY_S + payload_mib
        )
        peak = mib(daemon.pid, "VmHWM")
    finally:
        await children.stop()
    ended = (watch.props.get("State"), watch.props.get("LastResult", [0])[0])
    if ended != ("awaiting-reboot", NEEDS_REBOOT):
        raise RuntimeError(
            f"the {payload_mib} MiB install ended in {watch.props.get('State')} "
            f"with {watch.props.get('LastResult')}:\n{daemon.log_tail()}"
        )
    await asyncio.to_thread(w.drives.detach, device)
    copied = await asyncio.to_thread(tree_size, objects) - before
    return Peak(
        payload_mib=payload_mib,
        idle_rss_mib=idle,
        peak_mib=peak,
        child_peak_mib=children.peak_mib,
        child_command=children.command,
        install_s=done - started,
        copied_mib=copied / 2**20,
    )


# ---- 4. plug/unplug cycles -----------------------------------------------------------------


@dataclass
class Cycles:
    samples: dict[int, tuple[int, float]] = field(default_factory=dict)  # cycle: (fds, MiB)
    durations_s: list[float] = field(default_factory=list)


def write_photo_drive(image: Path) -> Path:
    """A small ext4 drive holding a photo and no bundle."""
    mountpoint = image.with_suffix(".mnt")
    with loop_ext4(image, size_mib=32, mountpoint=mountpoint, label="PHOTOS") as fs:
        (fs.mountpoint / "holiday.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    mountpoint.rmdir()
    return image


async def plug_cycles(work: Path, cycles: int, checkpoints: tuple[int, ...]) -> Cycles:
    root = work / "cycles"
    result = Cycles()
    async with simulated_world(root, apps=False, settings=SETTINGS) as w:
        assert w.drives is not None
        image = await asyncio.to_thread(write_photo_drive, root / "photos.img")
        watch = await StatusWatch.connect(w.bus_address)
        try:
            async with aklited(w, "cycles") as daemon:
                for cycle in range(1, cycles + 1):
                    since = watch.mark()
                    started = time.perf_counter()
                    device = await asyncio.to_thread(w.drives.attach, image)
                    await watch.first(drive_is(device, safe_to_remove=True), since=since)
                    since = watch.mark()
                    await asyncio.to_thread(w.drives.detach, device)
                    await watch.first(drive_gone(device), since=since)
                    result.durations_s.append(time.perf_counter() - started)
                    if cycle in checkpoints:
                        result.samples[cycle] = (open_fds(daemon.pid), mib(daemon.pid, "VmRSS"))
                found = tuple(watch.props.get("LastResult", ()))
                if found != (0, "the drive holds no update bundle"):
                    raise RuntimeError(f"the drive was not taken as expected: {found}")
        finally:
            await watch.close()
    return result


# ---- report --------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values)


def latency_row(latency: list[LatencyRun]) -> Row:
    return Row(
        bench="daemon",
        figure="udev event -> State=verifying",
        unit="ms",
        aklited=[r.verifying_ms - r.udev_ms for r in latency],
        baseline_name="udev done, after losetup",
        baseline=[r.udev_ms for r in latency],
        aim=LATENCY_AIM_MS,
        better="absolute",
        note=(
            "from udev's event (the baseline: when this script's libudev monitor saw it) to "
            "the PropertiesChanged saying State verifying; median split after udev's event: "
            f"the daemon lists the drive +{_median([r.seen_ms - r.udev_ms for r in latency]):.0f}"
            f" ms, mounted +{_median([r.mounted_ms - r.seen_ms for r in latency]):.0f} ms, "
            "bundle found and checked -> verifying "
            f"+{_median([r.verifying_ms - r.mounted_ms for r in latency]):.0f} ms"
        ),
    )


def idle_rows(idle: Idle) -> list[Row]:
    pings_per_minute = idle.per_minute(idle.expected_pings)
    baseline_per_minute = idle.per_minute(idle.baseline_switches)
    return [
        Row(
            bench="daemon",
            figure="idle RSS",
            unit="MiB",
            aklited=[idle.rss_mib],
            baseline_name="bare asyncio process",
            baseline=[idle.baseline_rss_mib],
            aim=IDLE_RSS_AIM_MIB,
            better="absolute",
            note=(
                f"{idle.anon_mib:.1f} MiB anonymous + {idle.file_mib:.1f} MiB file-backed "
                "(interpreter, extension modules, libraries); the baseline is "
                '`python3 -c "import asyncio; asyncio.run(asyncio.sleep(N))"`; the daemon\'s '
                f"imports alone take {idle.imports.with_rich_mib:.1f} MiB, "
                f"{idle.imports.without_rich_mib:.1f} MiB without rich (which structlog "
                "imports when installed: here only import-linter brings it, a device has none)"
            ),
        ),
        Row(
            bench="daemon",
            figure="idle wake-ups per minute",
            unit="wake-ups/min",
            aklited=[idle.per_minute(idle.switches)],
            baseline_name="bare asyncio process",
            baseline=[baseline_per_minute],
            # The watchdog's pings are the only wake-ups allowed beyond the bare process's.
            aim=pings_per_minute + baseline_per_minute,
            better="absolute",
            note=(
                f"context switches of all {idle.threads} threads over a {idle.window_s:.0f} s "
                f"window with WATCHDOG_USEC={WATCHDOG_USEC}: {idle.switches} switches, "
                f"{idle.pings} pings received ({idle.expected_pings:.1f} expected); the aim is "
                f"the expected pings ({pings_per_minute:.1f}/min) plus the bare process's own "
                f"wake-ups ({idle.baseline_switches} in the window)"
            ),
        ),
    ]


def peak_rows(peaks: list[Peak]) -> list[Row]:
    rows = [
        Row(
            bench="daemon",
            figure=f"peak RSS, {peak.payload_mib} MiB install",
            unit="MiB",
            aklited=[peak.peak_mib],
            baseline_name="the daemon idle",
            baseline=[peak.idle_rss_mib],
            aim=PEAK_RSS_AIM_MIB,
            better="absolute",
            note=(
                f"the daemon's VmHWM from plug-in to safe-to-remove; install {peak.install_s:.1f}"
                f" s, {peak.copied_mib:.0f} MiB of objects copied; largest child "
                f"{peak.child_command} >= {peak.child_peak_mib:.1f} MiB (sampled every 100 ms)"
            ),
        )
        for peak in peaks
    ]
    if len(peaks) > 1:
        first, last = peaks[0], peaks[-1]
        rows.append(
            Row(
                bench="daemon",
                figure=f"peak RSS growth {first.payload_mib} -> {last.payload_mib} MiB install",
                unit="MiB",
                aklited=[last.peak_mib - first.peak_mib],
                baseline_name="idle RSS growth",
                baseline=[last.idle_rss_mib - first.idle_rss_mib],
                aim=FLAT_MIB,
                better="absolute",
                note=f"flat: less than {FLAT_MIB:.0f} MiB more for the largest install",
            )
        )
    return rows


def cycle_rows(cycles: Cycles) -> list[Row]:
    """Open fds and RSS after the last cycle against their values after the warm-up."""
    ordered = sorted(cycles.samples)
    first, last = ordered[0], ordered[-1]
    fds = {cycle: float(sample[0]) for cycle, sample in cycles.samples.items()}
    rss = {cycle: sample[1] for cycle, sample in cycles.samples.items()}
    timing = (
        f"a cycle (attach -> safe to remove -> detach -> entry gone) took median "
        f"{ms(_median(cycles.durations_s)):.0f} ms, max {ms(max(cycles.durations_s)):.0f} ms"
    )
    return [
        Row(
            bench="daemon",
            figure=f"fds after {last} plug cycles",
            unit="fds",
            aklited=[fds[last]],
            baseline_name=f"after cycle {first} (warm-up)",
            baseline=[fds[first]],
            aim=fds[first] + CYCLE_FD_ALLOWANCE,
            better="absolute",
            note=(
                f"aim: the warm-up value + {CYCLE_FD_ALLOWANCE} (an fd in flight at sampling); "
                "by cycle: " + ", ".join(f"#{c} {fds[c]:.0f}" for c in ordered) + f"; {timing}"
            ),
            extra={f"cycle {c}": fds[c] for c in ordered},
        ),
        Row(
            bench="daemon",
            figure=f"RSS after {last} plug cycles",
            unit="MiB",
            aklited=[rss[last]],
            baseline_name=f"after cycle {first} (warm-up)",
            baseline=[rss[first]],
            aim=round(rss[first] + CYCLE_RSS_NOISE_MIB, 1),
            better="absolute",
            note=(
                f"aim: the warm-up value + {CYCLE_RSS_NOISE_MIB:.0f} MiB (allocator noise); "
                "by cycle: " + ", ".join(f"#{c} {rss[c]:.1f}" for c in ordered)
            ),
            extra={f"cycle {c}": rss[c] for c in ordered},
        ),
    ]


def report(
    latency: list[LatencyRun], idle: Idle, peaks: list[Peak], cycles: Cycles, total_s: float
) -> list[Row]:
    """The rows; prints what only the console shows: per-run latencies and the run's length."""
    print()
    print(
        "udev -> verifying per run: "
        + ", ".join(f"{r.verifying_ms - r.udev_ms:.0f}" for r in latency)
        + f" ms (worst {max(r.verifying_ms - r.udev_ms for r in latency):.0f} ms; "
        f"{_median([r.verifying_ms for r in latency]):.0f} ms median after losetup)"
    )
    print(f"Whole run: {total_s:.0f} s. MiB = 2^20 bytes.")
    rows = [latency_row(latency), *idle_rows(idle), *peak_rows(peaks), *cycle_rows(cycles)]
    for row in rows:
        print(f"- {row.figure}: {row.note}")
    print()
    return rows


async def main(*, quick: bool) -> list[Row]:
    configure_logging(target="console", level=logging.WARNING)
    runs = 3 if quick else 5
    window_s = 20.0 if quick else 60.0
    payloads = (100,) if quick else (100, 500, 1024)
    cycles = 40 if quick else 200
    checkpoints = (10, cycles // 2, cycles)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="aklited-bench-daemon-"))
    try:
        print(f"1. udev add → State=verifying, {runs} runs", flush=True)
        latency = await drive_latency(work, runs)
        print(f"2. idle for {window_s:.0f} s", flush=True)
        idle = await idle_footprint(work, window_s)
        peaks = []
        for payload in payloads:
            print(f"3. install of {payload} MiB", flush=True)
            peaks.append(await install_peak(work, payload))
        print(f"4. {cycles} plug/unplug cycles", flush=True)
        plugged = await plug_cycles(work, cycles, checkpoints)
    finally:
        await remove_tree(work)
    return report(latency, idle, peaks, plugged, time.perf_counter() - started)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer runs, shorter windows, one install size"
    )
    add_rows_option(parser)
    args = parser.parse_args()
    emit(asyncio.run(main(quick=args.quick)), args.rows)
