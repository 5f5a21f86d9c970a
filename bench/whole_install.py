"""The whole install through the daemon against reading the bundle's bytes off the same drive.

Figure: a drive is plugged in and aklited installs its bundle by itself; the time from
attaching the drive to the PropertiesChanged saying State "awaiting-reboot". Baseline: the
physical limit, reading every file of the bundle off the same drive image with the page cache
dropped (``find offline-update -type f -exec cat {} + | dd of=/dev/null bs=1M`` on the drive
mounted read-only, as aklited mounts it). Aim: at most 1.3 times the baseline. A plain
``dd`` of as many bytes of the raw device as the filesystem uses is measured beside it and
shown in the notes only: it reads the filesystem's journal and metadata too, and through
the block device's read-ahead rather than the files'.

Two device kinds, each a simulated device of its own (``aklited_sim.world``: an OSTree
sysroot, a system bus with systemd and logind stood in, systemd-udevd with aklited's rule
extended to loop devices, its own Docker engine for apps):

* rootfs-only: a rootfs with 280 MiB of random files (4 MiB each);
* rootfs+apps: 150 MiB of random rootfs files and two apps whose images each carry one
  75 MiB layer of random bytes (gzip level 1) on top of busybox.

Each on four drives: the disk image as fast as this machine reads it (a virtual disk, far
faster than any USB stick, and than ostree verifies objects), and read at 40 MB/s (a USB 2.0
stick), at 100 MB/s (a modest USB 3 stick) and at 180 MB/s (the loop-mounted drive the
install was first measured on: 283 MB in 1.54 s). The slow drives are the blkio (v1)
cgroup's read limit on every loop device, for this process and everything it starts (udevd,
the daemon, ostree, dd): baseline and install read the drive through the same limit; writes
and the device's own disk are left alone.

``--quick``: 80 MiB (rootfs-only), 40 + 40 MiB (rootfs+apps), 40 and 20 + 20 MiB on the slow
drives, 2 runs per kind; else 5. ``--kind`` picks kinds by their title.

One world per kind, one release per run (v2, v3, ...), each with new random bytes, so
nothing of it is on the device yet while the device has run the releases before (as in the
field). A run, with no daemon running (a running aklited takes every loop device attached):
publish the release and write its drive (ext4); then, in an order that rotates from run to
run, the baseline (attach, mount read-only, drop caches, read; unmount, detach) and the
install: start aklited (it finishes the previous run's install at start, as after a reboot)
and wait until it reads udev's events, ``sync``, drop caches, start the clock, attach the
drive, stop the clock when the PropertiesChanged with State "awaiting-reboot" arrives
(subscribed before the daemon starts); wait until the drive is safe to remove, detach it,
stop aklited, "reboot" the device.

Where the time goes, per run: the daemon journals every step with its time before the step
acts (``events`` in its SQLite journal), so a step lasts from its event to the next one and
holds all the daemon does meanwhile (stopping-aktualizr-lite also weighs the apps and the
rootfs for the progress). Before the first event: the drive seen by udev and mounted (until
the Media entry says "mounted") and the bundle found and checked (until "verifying"); after
the last: the State on the bus. staging-apps is split by its Progress messages: verifying
on the drive until the first "copied app ..." (so with the first blob's copy), then
copying; each app's images load into dockerd once its blobs are copied, during the rest of
the copy and the pull. During the install the CPU time of
aklited's own process (its Python and its threads), of its child processes (ostree, mount,
``docker compose config``; those still running are read live, the others from the daemon's
``cutime``) and of dockerd (image loads run there) is sampled every 0.2 s and split over
the steps: CPU well under a step's wall time means the step waits (on the drive, on
fsync, on another process). The drive's own counters tell how many bytes the install read
from it, against the bundle's size.

Run as root: .venv/bin/python bench/whole_install.py [--quick] [--kind TITLE] [--rows FILE]
(beside other udev or loop-device users: under ``flock /tmp/aklited-udev.lock``)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from aklite_bundle.appstore import BuiltLayer
from aklited.config import load_config
from aklited.daemon.mounts import MOUNT_OPTIONS
from aklited.engine.journal import Event, Journal
from aklited.log import configure_logging
from aklited_sim.daemon import RunningDaemon
from aklited_sim.factory import Release
from aklited_sim.signals import Change, StatusWatch, drive_is
from aklited_sim.sysroot import remove_tree
from aklited_sim.udev import settle
from aklited_sim.world import World, simulated_world
from bench.results import Row, add_rows_option, emit, median

SETTINGS = "reboot_delay_s = 0\nauto_reboot = false\n"
BASELINE = "reading the bundle's bytes off the drive (dd)"
AIM = 1.3
SAFETY_S = 120.0  # a safety net only: every wait is for an event
PROPERTIES = "org.freedesktop.DBus.Properties"
APP_NAMES = ("web", "db")
BUNDLE_DIR = "offline-update"  # where World.write_drive puts the bundle
CPU_SAMPLE_S = 0.2
TICK_S = 1 / os.sysconf("SC_CLK_TCK")
MB = 1e6
# Journal states as the breakdown names them; "awaiting-reboot" is recorded just before
# the State changes, so its segment is the signal's way to this process.
STEP_NAMES = {"awaiting-reboot": "State on the bus"}
SEEN = "drive seen + mounted"
FOUND = "bundle found + checked"
# staging-apps is one journal step; its Progress messages (aklited.apps.localstore says
# "copied app <name> blobs" after each blob) split it into verifying and copying. Each app's
# images load into dockerd once it is copied, on while the rootfs is pulled (the pulling
# event says which are "loading" still).
COPIED = "copied app "
STAGING_PARTS = (
    "staging-apps: verifying on the drive",
    "staging-apps: copying to the store",
)
PULLING_WHILE_LOADING = "pulling + loading images into dockerd"


@dataclass(frozen=True)
class Sizes:
    rootfs_mib: int
    apps_mib: int = 0  # split evenly over APP_NAMES, one payload layer each

    @property
    def total_mib(self) -> int:
        return self.rootfs_mib + self.apps_mib


@dataclass(frozen=True)
class Kind:
    name: str
    apps: bool
    full: Sizes
    quick: Sizes
    # The drive's read speed in MB/s; None: as fast as the disk image under it reads.
    drive_mb_s: float | None = None

    @property
    def title(self) -> str:
        if self.drive_mb_s is None:
            return self.name
        return f"{self.name}, drive read at {self.drive_mb_s:.0f} MB/s"


KINDS = (
    Kind("rootfs-only", apps=False, full=Sizes(280), quick=Sizes(80)),
    Kind("rootfs+apps", apps=True, full=Sizes(150, 150), quick=Sizes(40, 40)),
    # A USB 2.0 stick, and a modest USB 3 one: what a device in the field reads from.
    Kind("rootfs-only", apps=False, full=Sizes(280), quick=Sizes(40), drive_mb_s=40),
    Kind("rootfs+apps", apps=True, full=Sizes(150, 150), quick=Sizes(20, 20), drive_mb_s=40),
    Kind("rootfs-only", apps=False, full=Sizes(280), quick=Sizes(40), drive_mb_s=100),
    Kind("rootfs+apps", apps=True, full=Sizes(150, 150), quick=Sizes(20, 20), drive_mb_s=100),
    # As fast as the drive the first profile of an install read its bundle from.
    Kind("rootfs-only", apps=False, full=Sizes(280), quick=Sizes(40), drive_mb_s=180),
    Kind("rootfs+apps", apps=True, full=Sizes(150, 150), quick=Sizes(20, 20), drive_mb_s=180),
)


# ---- small helpers --------------------------------------------------------------------------


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


async def run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {err.decode()}")
    return out.decode()


def sectors_read(device: str) -> int:
    """Sectors (512 bytes) read from a block device so far (a loop device keeps counting
    across detach and attach: take differences)."""
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[2])


def bundle_bytes(bundle: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(bundle):
        for name in files:
            total += (Path(dirpath) / name).lstat().st_size
    return total


def stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from the state on (the command may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def own_and_children(pid: int) -> tuple[float, float]:
    """CPU seconds of ``pid`` itself and of its children it has waited for."""
    fields = stat_fields(pid)
    # fields[0] is the state (stat's field 3): utime, stime, cutime, cstime are 14..17.
    own = int(fields[11]) + int(fields[12])
    children = int(fields[13]) + int(fields[14])
    return own * TICK_S, children * TICK_S


def live_descendants_cpu(pid: int) -> float:
    """CPU seconds of every process below ``pid`` still there (not yet waited for)."""
    children: dict[int, list[int]] = {}
    cpu: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(int(entry.name))
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = int(fields[11]) + int(fields[12])
    total, frontier = 0, [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        total += sum(cpu[child] for child in below)
        frontier += below
    return total * TICK_S


# ---- a drive at USB speed -------------------------------------------------------------------

BLKIO = Path("/sys/fs/cgroup/blkio")
READ_BPS = "blkio.throttle.read_bps_device"


@contextmanager
def drives_read_at(mb_s: float | None) -> Iterator[None]:
    """From now on this process and every process it starts (udevd, the daemon, ostree, dd)
    read each loop device at ``mb_s`` at most: the read throttle of a blkio (v1) cgroup.
    Writes and every other disk are left alone. None: no limit."""
    if mb_s is None:
        yield
        return
    if not (BLKIO / READ_BPS).exists():
        raise SystemExit("a drive at USB speed needs the blkio cgroup controller (v1)")
    group = BLKIO / f"aklited-bench-{os.getpid()}"
    group.mkdir()
    try:
        for device in sorted(Path("/sys/block").glob("loop*")):
            rule = f"{(device / 'dev').read_text().strip()} {int(mb_s * MB)}"
            (group / READ_BPS).write_text(rule)
        (group / "cgroup.procs").write_text(str(os.getpid()))
        try:
            yield
        finally:
            (BLKIO / "cgroup.procs").write_text(str(os.getpid()))
    finally:
        _remove_group(group)


def _remove_group(group: Path) -> None:
    # The world's processes are gone by now, but the kernel may not have reaped them yet.
    for _ in range(50):
        try:
            group.rmdir()
        except OSError:
            time.sleep(0.1)
        else:
            return
    print(f"warning: {group} still has members; left in place", flush=True)


def check_read_speed(device: str) -> None:
    """Refuse to measure a drive that reads faster than the run says (a loop device made
    after :func:`drives_read_at` set its rules has none)."""
    line = next(
        (entry for entry in Path("/proc/self/cgroup").read_text().splitlines()
         if entry.split(":")[1] == "blkio"),
        "",
    )  # fmt: skip
    group = BLKIO / line.rpartition(":")[2].lstrip("/")
    if group == BLKIO:
        return
    numbers = Path(f"/sys/block/{Path(device).name}/dev").read_text().strip()
    rules = (group / READ_BPS).read_text().split()
    if numbers not in rules[0::2]:
        raise RuntimeError(f"{device} ({numbers}) has no read limit in {group}")


# ---- the daemon's signals -------------------------------------------------------------------


def awaiting_reboot(change: Change) -> bool:
    return change.get("State") == "awaiting-reboot"


async def drain_notifications(daemon: RunningDaemon) -> None:
    """Read the daemon's sd_notify datagrams as systemd does: unread, the socket fills up
    after 10 and every STATUS= line after that fails in the daemon with a warning."""
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(daemon.notifications.sock, 4096)
        daemon.notifications.received.append(data.decode(errors="replace"))


# ---- CPU over time --------------------------------------------------------------------------


@dataclass(frozen=True)
class CpuSample:
    at: float  # perf_counter
    own: float  # the daemon's process
    children: float  # its children: waited for (cutime) + still running
    dockerd: float  # dockerd with the children it waited for


class CpuSampler:
    """The daemon's, its children's and dockerd's CPU seconds, every CPU_SAMPLE_S."""

    def __init__(self, pid: int, dockerd_pid: int | None) -> None:
        self.pid = pid
        self.dockerd_pid = dockerd_pid
        self.samples: list[CpuSample] = []

    def sample(self) -> None:
        at = time.perf_counter()
        own, waited = own_and_children(self.pid)
        live = live_descendants_cpu(self.pid)
        dockerd = sum(own_and_children(self.dockerd_pid)) if self.dockerd_pid else 0.0
        self.samples.append(CpuSample(at, own, waited + live, dockerd))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CpuSampler]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(CPU_SAMPLE_S)  # a sampling period, not a wait for news
                self.sample()

        self.sample()
        task = asyncio.create_task(loop())
        try:
            yield self
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.sample()

    def at(self, when: float) -> CpuSample:
        """The counters at ``when``, interpolated between the samples around it."""
        before = [s for s in self.samples if s.at <= when]
        after = [s for s in self.samples if s.at >= when]
        if not before or not after:
            return (before or after)[-1 if before else 0]
        low, high = before[-1], after[0]
        if high.at == low.at:
            return low
        share = (when - low.at) / (high.at - low.at)

        def mix(a: float, b: float) -> float:
            return a + (b - a) * share

        return CpuSample(
            when,
            mix(low.own, high.own),
            mix(low.children, high.children),
            mix(low.dockerd, high.dockerd),
        )


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float
    own: float
    children: float
    dockerd: float


# ---- one install, one baseline ----------------------------------------------------------------


@dataclass
class Install:
    seconds: float
    steps: list[Step]
    drive_read: int  # bytes read off the drive, attach to awaiting-reboot


@dataclass
class Reading:
    files_s: float  # every file of the bundle, through the filesystem
    raw_s: float  # as many bytes as the filesystem uses, off the raw device
    bundle: int  # bytes in the bundle's files
    used: int  # bytes the filesystem uses


async def read_bundle(w: World, image: Path, mountpoint: Path) -> Reading:
    """The baseline: attach, mount read-only, drop caches, read; no daemon may run now."""
    assert w.drives is not None
    device = await asyncio.to_thread(w.drives.attach, image)
    try:
        check_read_speed(device)
        # udev's probe reads the drive too: done before the clock starts.
        await asyncio.to_thread(settle)
        await asyncio.to_thread(mountpoint.mkdir, exist_ok=True)
        await run("mount", "-t", "ext4", "-o", MOUNT_OPTIONS, device, str(mountpoint))
        try:
            bundle = await asyncio.to_thread(bundle_bytes, mountpoint / BUNDLE_DIR)
            vfs = os.statvfs(mountpoint)
            used = (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize
            await asyncio.to_thread(drop_caches)
            started = time.perf_counter()
            await read_files(mountpoint)
            files_s = time.perf_counter() - started
        finally:
            await run("umount", str(mountpoint))
        block = 4 << 20
        await asyncio.to_thread(drop_caches)
        started = time.perf_counter()
        await run(
            "dd", f"if={device}", "of=/dev/null", f"bs={block}", f"count={-(-used // block)}",
            "status=none",
        )  # fmt: skip
        raw_s = time.perf_counter() - started
    finally:
        await asyncio.to_thread(w.drives.detach, device)
        await asyncio.to_thread(settle)
    return Reading(files_s=files_s, raw_s=raw_s, bundle=bundle, used=used)


async def read_files(mountpoint: Path) -> None:
    """Every file of the bundle, each read whole, in ``find``'s order."""
    process = await asyncio.create_subprocess_shell(
        f"find {BUNDLE_DIR} -type f -exec cat {{}} + | dd of=/dev/null bs=1M status=none",
        cwd=mountpoint,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"reading the bundle failed: {err.decode()}")


@dataclass
class Timeline:
    """What one install took, before the journal is read: perf_counter times."""

    t0: float
    wall0: float
    mounted: float
    done: float
    drive_read: int
    cpu: CpuSampler
    progress: list[tuple[float, str]]  # the Progress messages, as they arrived


async def install(
    w: World, watch: StatusWatch, image: Path, name: str, timeout_s: float
) -> Timeline:
    """Start aklited, plug the drive in, wait for "awaiting-reboot"; stop aklited again."""
    assert w.drives is not None
    plugged: list[str] = []
    try:
        async with w.daemon(name) as daemon:
            drain = asyncio.create_task(drain_notifications(daemon))
            try:
                await daemon.watching_drives()
                return await _plug_in(w, watch, daemon, image, timeout_s=timeout_s, plugged=plugged)
            finally:
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
    finally:
        # Cut short, the daemon has stopped (and unmounted the drive) before it goes.
        for device in plugged:
            await asyncio.to_thread(w.drives.detach, device)
            await asyncio.to_thread(settle)


async def _plug_in(
    w: World,
    watch: StatusWatch,
    daemon: RunningDaemon,
    image: Path,
    *,
    timeout_s: float,
    plugged: list[str],
) -> Timeline:
    assert w.drives is not None
    await asyncio.to_thread(drop_caches)
    sampler = CpuSampler(daemon.process.pid, w.dockerd.process.pid if w.dockerd else None)
    since = watch.mark()
    async with sampler.running():
        t0, wall0 = time.perf_counter(), time.time()
        device = await asyncio.to_thread(w.drives.attach, image)
        plugged.append(device)
        check_read_speed(device)
        attached = sectors_read(device)
        done = await watch.first(
            lambda c: awaiting_reboot(c) or drive_is(device, safe_to_remove=True)(c),
            since=since,
            timeout_s=timeout_s,
        )
        sampler.sample()
        drive_read = (sectors_read(device) - attached) * 512
        # Unplugged once the daemon is done with it, as a user would, never while mounted.
        await watch.first(drive_is(device, safe_to_remove=True), since=since)
    plugged.remove(device)
    await asyncio.to_thread(w.drives.detach, device)
    await asyncio.to_thread(settle)
    if not any(awaiting_reboot(change) for _, change in watch.changes[since:]):
        raise RuntimeError(
            f"the install ended with {watch.props.get('LastResult')}:\n{daemon.log()[-3000:]}"
        )
    mounted = await watch.first(drive_is(device, state="mounted"), since=since)
    progress = [
        (at, str(change["Progress"][1]))
        for at, change in watch.changes[since:]
        if "Progress" in change
    ]
    return Timeline(t0, wall0, mounted, done, drive_read, sampler, progress)


def journal_events(w: World) -> list[Event]:
    db_path = load_config([w.config_dir]).storage.db_path
    journal = Journal.open_readonly(db_path)
    if journal is None:
        raise RuntimeError(f"no journal at {db_path}")
    with journal:
        return journal.events()


def steps_of(timeline: Timeline, events: Sequence[Event]) -> list[Step]:
    """The install's steps, each from its journal event to the next one."""

    def perf(event: Event) -> float:
        return timeline.t0 + datetime.fromisoformat(event.time).timestamp() - timeline.wall0

    ours = [e for e in events if perf(e) >= timeline.t0]
    start = next(i for i, e in enumerate(ours) if e.state == "verifying")
    end = next(i for i, e in enumerate(ours) if e.state == "awaiting-reboot" and i > start)
    marks = [(SEEN, timeline.t0), (FOUND, timeline.mounted)]
    for event in ours[start : end + 1]:
        if event.state == "staging-apps":
            marks += staging_marks(perf(event), timeline.progress)
        elif event.state == "pulling" and event.detail.get("loading"):
            marks.append((PULLING_WHILE_LOADING, perf(event)))
        else:
            marks.append((STEP_NAMES.get(event.state, event.state), perf(event)))
    marks.append(("", timeline.done))
    steps = []
    for (name, begin), (_, finish) in itertools.pairwise(marks):
        low, high = timeline.cpu.at(begin), timeline.cpu.at(finish)
        steps.append(
            Step(
                name,
                finish - begin,
                high.own - low.own,
                high.children - low.children,
                high.dockerd - low.dockerd,
            )
        )
    return steps


def staging_marks(begin: float, progress: Sequence[tuple[float, str]]) -> list[tuple[str, float]]:
    """staging-apps in its parts, as its Progress messages mark them: the apps are verified
    on the drive, then copied blob by blob ("copied app ..." after each)."""
    copied = [at for at, message in progress if at >= begin and message.startswith(COPIED)]
    if not copied:
        return [("staging-apps", begin)]
    return [(STAGING_PARTS[0], begin), (STAGING_PARTS[1], copied[0])]


# ---- one device kind ------------------------------------------------------------------------


@dataclass
class KindResult:
    kind: Kind
    sizes: Sizes
    installs: list[Install] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)


async def publish(w: World, version: int, sizes: Sizes) -> tuple[Release, list[BuiltLayer]]:
    """Release ``version`` with new random bytes: rootfs files and, for apps, image layers."""
    apps: dict[str, str] = {}
    layers: list[BuiltLayer] = []
    if sizes.apps_mib:
        each = sizes.apps_mib // len(APP_NAMES)
        for app in APP_NAMES:
            layer = await asyncio.to_thread(
                w.factory.payload_layer, f"{app}-{version}", size_mib=each
            )
            layers.append(layer)
            apps[app] = await asyncio.to_thread(w.factory.app, app, version=version, layers=[layer])
    release = await w.factory.release(version, apps=apps, payload_mib=sizes.rootfs_mib)
    return release, layers


async def bench_kind(work: Path, kind: Kind, sizes: Sizes, runs: int) -> KindResult:
    # Short: dockerd's socket paths under it have a length limit.
    speed = f"-{kind.drive_mb_s:.0f}" if kind.drive_mb_s is not None else ""
    root = work / f"{kind.name.replace('+', '-')}{speed}"
    result = KindResult(kind, sizes)
    # Archive objects and gzip layers of random bytes are no smaller than the files.
    drive_mib = sizes.total_mib * 5 // 4 + 64
    try:
        with drives_read_at(kind.drive_mb_s):
            await _bench_world(root, kind, result, runs, drive_mib)
    finally:
        await remove_tree(root)
    return result


async def _bench_world(
    root: Path, kind: Kind, result: KindResult, runs: int, drive_mib: int
) -> None:
    async with simulated_world(root, apps=kind.apps, settings=SETTINGS) as w:
        watch = await StatusWatch.connect(w.bus_address)
        try:
            for index in range(runs):
                version = index + 2
                print(f"  {kind.title} run {index + 1}/{runs}: publishing v{version}", flush=True)
                release, layers = await publish(w, version, result.sizes)
                image = await w.write_drive(root / f"v{version}.img", [release], size_mib=drive_mib)
                for layer in layers:
                    w.factory.forget_layer(layer)
                await one_run(w, watch, result, image, index)
                await asyncio.to_thread(image.unlink)
        finally:
            await watch.close()


async def one_run(
    w: World, watch: StatusWatch, result: KindResult, image: Path, index: int
) -> None:
    timeout_s = SAFETY_S + result.sizes.total_mib
    mountpoint = image.with_suffix(".baseline")

    async def baseline() -> None:
        result.readings.append(await read_bundle(w, image, mountpoint))

    async def ours() -> None:
        timeline = await install(w, watch, image, f"aklited-{index}", timeout_s)
        steps = steps_of(timeline, await asyncio.to_thread(journal_events, w))
        result.installs.append(Install(timeline.done - timeline.t0, steps, timeline.drive_read))
        await w.reboot()

    for contender in (baseline, ours) if index % 2 == 0 else (ours, baseline):
        await contender()
    await asyncio.to_thread(mountpoint.rmdir)
    reading, done = result.readings[-1], result.installs[-1]
    print(
        f"    aklited {done.seconds:.2f} s, reading the bundle {reading.files_s:.2f} s "
        f"(raw dd {reading.raw_s:.2f} s), {reading.bundle / MB:.0f} MB",
        flush=True,
    )


# ---- report ---------------------------------------------------------------------------------


def step_medians(installs: Sequence[Install]) -> list[Step]:
    names: list[str] = []
    for done in installs:
        names += [s.name for s in done.steps if s.name not in names]

    def med(name: str, pick: Callable[[Step], float]) -> float:
        return median([pick(s) for done in installs for s in done.steps if s.name == name])

    return [
        Step(
            name,
            med(name, lambda s: s.seconds),
            med(name, lambda s: s.own),
            med(name, lambda s: s.children),
            med(name, lambda s: s.dockerd),
        )
        for name in names
    ]


def breakdown(result: KindResult) -> tuple[str, str]:
    """The per-step table (markdown) and its one-line summary."""
    steps = step_medians(result.installs)
    total = median([done.seconds for done in result.installs])
    with_docker = result.kind.apps
    head = "| step | wall s | share | aklited CPU s | children CPU s |"
    rule = "|---|---|---|---|---|"
    if with_docker:
        head, rule = head + " dockerd CPU s |", rule + "---|"
    lines = [head, rule]
    for step in steps:
        line = (
            f"| {step.name} | {step.seconds:.3f} | {step.seconds / total:.0%} "
            f"| {step.own:.2f} | {step.children:.2f} |"
        )
        lines.append(line + (f" {step.dockerd:.2f} |" if with_docker else ""))
    own = median([sum(s.own for s in done.steps) for done in result.installs])
    children = median([sum(s.children for s in done.steps) for done in result.installs])
    dockerd = median([sum(s.dockerd for s in done.steps) for done in result.installs])
    line = f"| whole install | {total:.3f} | 100% | {own:.2f} | {children:.2f} |"
    lines.append(line + (f" {dockerd:.2f} |" if with_docker else ""))
    slowest = max(steps, key=lambda s: s.seconds)
    busy = slowest.own + slowest.children + slowest.dockerd
    read = median([done.drive_read for done in result.installs])
    bundle = median([r.bundle for r in result.readings])
    lines += [
        "",
        f"Slowest step: {slowest.name}, {slowest.seconds:.2f} s: aklited's own process "
        f"{slowest.own:.2f} s CPU, its child processes {slowest.children:.2f} s"
        + (f", dockerd {slowest.dockerd:.2f} s" if with_docker else "")
        + f"; {max(0.0, slowest.seconds - busy):.2f} s of the wall time on no CPU of these "
        f"(waiting on the drive, fsync or another process; CPU on two cores may overlap).",
        f"Read off the drive during the install: {read / MB:.0f} MB for a bundle of "
        f"{bundle / MB:.0f} MB ({read / bundle:.2f}x).",
    ]
    summary = "median steps: " + ", ".join(
        f"{s.name} {s.seconds:.2f} s" for s in steps if s.seconds >= 0.005
    )
    summary += (
        f"; CPU: aklited {own:.2f} s, its children {children:.2f} s"
        + (f", dockerd {dockerd:.2f} s" if with_docker else "")
        + f"; read off the drive {read / bundle:.2f}x the bundle"
        + f"; raw dd of the used bytes {median([r.raw_s for r in result.readings]):.2f} s"
    )
    return "\n".join(lines), summary


def row_of(result: KindResult, summary: str) -> Row:
    bundle = median([r.bundle for r in result.readings])
    steps = step_medians(result.installs)
    extra = {f"step {s.name} s": s.seconds for s in steps}
    extra |= {
        "bundle MB": bundle / MB,
        "raw dd s": median([r.raw_s for r in result.readings]),
        "drive read MB": median([d.drive_read for d in result.installs]) / MB,
        "aklited CPU s": median([sum(s.own for s in d.steps) for d in result.installs]),
        "children CPU s": median([sum(s.children for s in d.steps) for d in result.installs]),
    }
    if result.kind.apps:
        extra["dockerd CPU s"] = median([sum(s.dockerd for s in d.steps) for d in result.installs])
    return Row(
        bench="whole_install",
        figure=f"whole install via the daemon, {result.kind.title} ({bundle / MB:.0f} MB bundle)",
        unit="s",
        aklited=[d.seconds for d in result.installs],
        baseline_name=BASELINE,
        baseline=[r.files_s for r in result.readings],
        aim=AIM,
        better="lower",
        note=summary,
        extra=extra,
    )


async def main(*, quick: bool, rows_path: Path | None, kinds: Sequence[Kind]) -> None:
    configure_logging(target="console", level=logging.WARNING)
    # Interrupted, the run still takes its drives, daemons and directories down with it.
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, task.cancel)
    runs = 2 if quick else 5
    work = Path(tempfile.mkdtemp(prefix="aklited-bench-whole-"))
    results = []
    try:
        for kind in kinds:
            sizes = kind.quick if quick else kind.full
            print(f"{kind.title}: {sizes.total_mib} MiB of payload, {runs} runs", flush=True)
            results.append(await bench_kind(work, kind, sizes, runs))
    finally:
        await remove_tree(work)
    rows = []
    for result in results:
        table, summary = breakdown(result)
        print(f"\n{result.kind.title}: where the time goes (medians of {runs} runs)\n")
        print(table)
        rows.append(row_of(result, summary))
    print()
    emit(rows, rows_path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller bundles, 2 runs per kind")
    titles = [kind.title for kind in KINDS]
    parser.add_argument(
        "--kind", action="append", choices=titles, help="only this device and drive (repeatable)"
    )
    add_rows_option(parser)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, page cache drops, dockerd)")
    chosen = [kind for kind in KINDS if not args.kind or kind.title in args.kind]
    asyncio.run(main(quick=args.quick, rows_path=args.rows, kinds=chosen))
