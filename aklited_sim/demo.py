"""``make demo``: plug a USB drive into a simulated LmP device and aklited updates it alone.

Everything is real but the hardware and two system services: the device is an OSTree
sysroot in a temporary directory (its "kernel command line" a file), its Docker engine an
isolated ``dockerd``, its system bus a ``dbus-daemon`` loading aklited's shipped policy, with
python-dbusmock standing in for systemd and logind; a real ``systemd-udevd`` reports the USB
drive, a loop-attached ext4 image. The device runs release 1 and its app; a simulated
factory signs release 2 (a new rootfs and a changed app) onto the drive. aklited takes the
drive, verifies and installs the update, asks logind to reboot, and after the simulated
reboot finishes the update before it tells systemd it is ready.

Run as root: ``python -m aklited_sim.demo [--keep]``. The exit code is 0 only when every
step happened and nothing (mount, loop device, process, file) is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast.aio import MessageBus

from aklited.cli.ctl import Client
from aklited.log import configure_logging
from aklited.outcomes import StatusCode
from aklited_sim.daemon import SAFETY_S, RunningDaemon
from aklited_sim.factory import HWID, Factory, Release
from aklited_sim.sysroot import remove_tree
from aklited_sim.udev import RUNTIME_RULES
from aklited_sim.world import World, simulated_world

APP = "hello"
MOTD = "usr/share/demo/motd"
SOURCE_WIDTH = 16  # the longest source name: "aklitectl status"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def show(source: str, text: str) -> None:
    print(f"{source:>{SOURCE_WIDTH}} | {text}", flush=True)


class Lines:
    """A process's output, printed line by line as it comes, kept for waiting on."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        source: str,
        *,
        shown: Callable[[str], str] = lambda line: line,
    ) -> None:
        self.process = process
        self.source = source
        self.lines: list[str] = []
        self.bytes_read = 0
        self._shown = shown
        self._changed = asyncio.Condition()
        self._ended = False
        self._reader = asyncio.create_task(self._read(), name=f"demo-{source}")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        partial = b""
        try:
            while chunk := await self.process.stdout.read(65536):
                *complete, partial = (partial + chunk).split(b"\n")
                for raw in complete:
                    self._add(raw)
                async with self._changed:
                    self.bytes_read += len(chunk)
                    self._changed.notify_all()
            if partial:
                self._add(partial)
        finally:
            async with self._changed:
                self._ended = True
                self._changed.notify_all()

    def _add(self, raw: bytes) -> None:
        line = self._shown(raw.decode(errors="replace"))
        self.lines.append(line)
        show(self.source, line)

    async def wait_for(self, wanted: Callable[[str], bool]) -> str:
        """The first line (already seen or still to come) that is ``wanted``."""
        async with asyncio.timeout(SAFETY_S), self._changed:
            await self._changed.wait_for(
                lambda: self._ended or any(wanted(line) for line in self.lines)
            )
        found = next((line for line in self.lines if wanted(line)), None)
        if found is None:
            raise LookupError(f"{self.source} ended without the line awaited")
        return found

    async def wait_for_bytes(self, count: int) -> None:
        async with asyncio.timeout(SAFETY_S), self._changed:
            await self._changed.wait_for(lambda: self._ended or self.bytes_read >= count)

    async def finish(self) -> int:
        """Until the process exits by itself and all it wrote is shown: its exit code."""
        async with asyncio.timeout(SAFETY_S):
            code = await self.process.wait()
            await self._reader
        return code

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                self.process.terminate()
        await self.process.wait()
        await self._reader


@asynccontextmanager
async def command_shown(
    argv: Sequence[str], source: str, *, env: Mapping[str, str]
) -> AsyncIterator[Lines]:
    """A command whose output is shown as it comes; stopped at the end if still running."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines = Lines(process, source)
    try:
        yield lines
    finally:
        await lines.stop()


@asynccontextmanager
async def followed(
    path: Path, source: str, *, shown: Callable[[str], str] = lambda line: line
) -> AsyncIterator[Lines]:
    """A file's lines as they are appended (``tail -F``, woken by inotify, never polled here).

    Only what is appended from now on is shown. On exit, every byte the file holds by then
    is shown before ``tail`` is stopped: stop the writer before leaving the block.
    """
    await asyncio.to_thread(path.touch)
    start = (await asyncio.to_thread(path.stat)).st_size
    process = await asyncio.create_subprocess_exec(
        "tail", "--follow=name", "--retry", "-c", f"+{start + 1}", str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    lines = Lines(process, source, shown=shown)
    try:
        yield lines
        end = (await asyncio.to_thread(path.stat)).st_size
        await lines.wait_for_bytes(end - start)
    finally:
        await lines.stop()


def without_stamp(line: str) -> str:
    # python-dbusmock's call log: "<unix time> <method> <arguments>"
    return line.split(" ", 1)[1] if " " in line else line


@asynccontextmanager
async def daemon_shown(world: World, name: str) -> AsyncIterator[tuple[RunningDaemon, Lines]]:
    """aklited started (as systemd would) with its log lines shown from its first one."""
    log_path = world.root / f"{name}.log"
    async with followed(log_path, "aklited") as log, world.daemon(name) as daemon:
        assert daemon.log_path == log_path
        yield daemon, log


class Step(enum.Enum):
    """What the demo must show happening; the exit code says whether all of it did."""

    RELEASE_1_UP = "the release-1 app answered before the drive came"
    INSTALLED = "aklitectl watch ended with 100 (reboot needed)"
    REBOOT_REQUESTED = "logind received the reboot request"
    AWAITING_REBOOT = "aklited awaited the reboot, the drive safe to remove"
    FINISHED_BEFORE_READY = "aklited finished the update before READY=1"
    ROOTFS_2_BOOTED = "the booted rootfs is release 2"
    RELEASE_2_UP = "the release-2 app answered"
    FINAL_STATUS = "aklitectl status: idle on release 2"
    NOTHING_LEFT = "nothing left behind"


@dataclass
class Checklist:
    happened: set[Step] = field(default_factory=set)

    def check(self, step: Step, happened: bool) -> None:
        if happened:
            self.happened.add(step)

    def missing(self) -> list[Step]:
        return [step for step in Step if step not in self.happened]


def hello_app(factory: Factory, version: int) -> str:
    return factory.app(
        APP,
        version=version,
        command=["sh", "-c", f"echo hello from release {version}; exec sleep 86400"],
    )


async def aklitectl_shown(world: World, *args: str) -> int:
    """``aklitectl ARGS`` in its human form, shown as the operator reads it."""
    print(f"$ aklitectl {' '.join(args)}", flush=True)
    argv = [sys.executable, "-m", "aklited.cli.ctl", *args]
    async with command_shown(argv, f"aklitectl {args[0]}", env=world.env()) as output:
        return await output.finish()


async def app_says(world: World, text: str) -> bool:
    """Whether the app's container printed ``text`` (``docker logs -f``: waits for it)."""
    assert world.dockerd is not None
    listed = await asyncio.to_thread(
        world.dockerd.cli,
        "ps", "--filter", f"label=com.docker.compose.project={APP}", "--format", "{{.Names}}",
    )  # fmt: skip
    names = listed.stdout.split()
    if len(names) != 1:
        show("docker ps", f"{APP} runs {len(names)} containers: {names}")
        return False
    argv = ["docker", "logs", "--follow", names[0]]
    async with command_shown(argv, "docker logs", env=world.dockerd.env()) as output:
        try:
            await output.wait_for(lambda line: line == text)
        except (LookupError, TimeoutError):
            return False
    return True


async def status_json(world: World) -> dict[str, Any]:
    code, status = await world.aklitectl("status")
    if code != 0 or not isinstance(status, dict):
        raise RuntimeError(f"aklitectl status failed ({code}): {status}")
    return status


async def release_1_running(world: World, checks: Checklist) -> None:
    """The device as it left the factory: release 1's rootfs booted, its app installed by
    aklited from the factory's bundle (apps only: no reboot), and answering."""
    say("1. The device runs release 1 and its app")
    factory = world.factory
    # Release 1's rootfs is the one the device was built with and boots.
    release = Release(
        name=f"{HWID}-lmp-1",
        version=1,
        commit=world.sim.initial_commit,
        apps={APP: hello_app(factory, 1)},
    )
    bundle = await factory.write_bundle(factory.root / "release-1", [release])
    print(f"booted: {release.name}, commit {release.commit[:12]} (sysroot {world.sim.sysroot})")
    print(f"app {APP!r} release 1, installed at the factory by aklited from {bundle}:")
    async with world.daemon("aklited-factory"):
        results = await install_until_done(world, bundle)
    for code, message in results:
        show("D-Bus Completed", f"{code} {message}")
    done = results[-1][0] == 0
    checks.check(Step.RELEASE_1_UP, done and await app_says(world, "hello from release 1"))


async def install_until_done(world: World, bundle: Path) -> list[tuple[int, str]]:
    """Install ``bundle`` over D-Bus; every ``Completed`` until the update is done.

    Apps only: the install (101) is followed by dockerd's restart and the finalize (0).
    """
    bus = await MessageBus(bus_address=world.bus_address).connect()
    try:
        client = Client(bus)
        await client.subscribe()  # before the install: no signal is missed
        await client.call("Install", "sa{sv}", [str(bundle), {}])
        results: list[tuple[int, str]] = []
        while not results or results[-1][0] == StatusCode.NEEDS_DOCKER_RESTART:
            results.append(await asyncio.wait_for(client.completed.get(), SAFETY_S))
        return results
    finally:
        bus.disconnect()


async def release_2_on_a_drive(world: World) -> tuple[Release, Path]:
    say("2. The factory signs release 2 onto a USB drive (a new rootfs, a changed app)")
    factory = world.factory
    release = await factory.release(
        2,
        apps={APP: hello_app(factory, 2)},
        files={MOTD: b"Welcome to release 2\n"},
    )
    image = await world.write_drive(world.root / "usb-drive.img", [release])
    print(f"{image.name}: ext4, label UPDATE, offline-update/ holds {release.name}")
    print(f"  rootfs commit {release.commit[:12]} (adds /{MOTD}), app {APP!r} release 2")
    print("the drive is written and unplugged")
    return release, image


async def drive_installs(world: World, checks: Checklist, release: Release, image: Path) -> None:
    say("3. aklited runs; the drive is plugged in")
    assert world.drives is not None
    watch_argv = [sys.executable, "-m", "aklited.cli.ctl", "watch"]
    async with (
        followed(world.logind.log_path, "logind", shown=without_stamp) as logind,
        daemon_shown(world, "aklited"),
    ):
        async with command_shown(watch_argv, "aklitectl watch", env=world.env()) as watch:
            # Its first line says where things stand: it is subscribed, no progress is missed.
            await watch.wait_for(lambda _: True)
            device = await asyncio.to_thread(world.drives.attach, image)
            show("losetup", f"{device}: {image.name} attached (the USB drive is plugged in)")
            checks.check(Step.INSTALLED, await watch.finish() == 100)

        say("4. logind is asked to reboot")
        request = await logind.wait_for(lambda line: line.startswith("Reboot"))
        print(f"the logind stand-in received: {request}")
        checks.check(Step.REBOOT_REQUESTED, request.startswith("Reboot"))
        await aklitectl_shown(world, "status")
        status = await status_json(world)
        media = [m for m in status["Media"] if m["device"] == device]
        checks.check(
            Step.AWAITING_REBOOT,
            status["State"] == "awaiting-reboot"
            and status["PendingTarget"].get("name") == release.name
            and bool(media)
            and media[0]["safe_to_remove"] is True,
        )
        await asyncio.to_thread(world.drives.detach, device)
        show("losetup", f"{device}: detached (the drive is pulled)")
        # The reboot stops aklited (SIGTERM) as it stops every service.


async def reboot_and_finish(world: World, checks: Checklist, release: Release) -> None:
    say("5. The device reboots; aklited finishes the update before it is ready")
    deployment = await world.reboot()
    show("bootloader", f"boots deployment {deployment}")
    motd = world.sim.sysroot / "ostree/deploy" / world.sim.osname / "deploy" / deployment / MOTD
    async with daemon_shown(world, "aklited-after-reboot") as (daemon, log):
        await log.wait_for(lambda line: "aklited ready" in line)
        notified = daemon.notifications.received
        for message in notified:
            show("sd_notify", " ".join(message.splitlines()))
        checks.check(Step.FINISHED_BEFORE_READY, finished_before_ready(notified))
        text = await asyncio.to_thread(first_line, motd)
        print(f"/{MOTD} in the booted rootfs: {text}")
        checks.check(Step.ROOTFS_2_BOOTED, text == "Welcome to release 2")

        say("6. The release-2 app answers; aklitectl status")
        checks.check(Step.RELEASE_2_UP, await app_says(world, "hello from release 2"))
        await aklitectl_shown(world, "status")
        status = await status_json(world)
        checks.check(
            Step.FINAL_STATUS,
            status["State"] == "idle"
            and status["CurrentTarget"].get("name") == release.name
            and status["PendingTarget"] == {}
            and status["LastResult"][0] == 0,
        )


def first_line(path: Path) -> str:
    return path.read_text().strip() if path.exists() else f"{path} is missing"


def finished_before_ready(messages: Sequence[str]) -> bool:
    """Whether a ``STATUS=finishing ...`` datagram came before the one with READY=1."""
    ready = next((i for i, m in enumerate(messages) if "READY=1" in m.splitlines()), None)
    return ready is not None and any(
        line.startswith("STATUS=finishing") for m in messages[:ready] for line in m.splitlines()
    )


async def story(world: World, checks: Checklist) -> None:
    await release_1_running(world, checks)
    release, image = await release_2_on_a_drive(world)
    await drive_installs(world, checks, release, image)
    await reboot_and_finish(world, checks, release)


@dataclass(frozen=True)
class Machine:
    """What the machine had before the demo, to tell what the demo left behind."""

    udevd_pids: frozenset[int]
    udevd_dirs: frozenset[Path]

    @classmethod
    def now(cls) -> Machine:
        return cls(frozenset(_pids_of("systemd-udevd")), frozenset(_udevd_dirs()))

    def leftovers(self, work: Path, *, keep: bool) -> list[str]:
        found = [f"loop device {d} on {f}" for d, f in _loop_backing_files() if _under(f, work)]
        found += [f"mount {m}" for m in _mountpoints() if _under(m, work)]
        found += [f"process {pid}: {cmd}" for pid, cmd in _cmdlines() if str(work) in cmd]
        found += [f"systemd-udevd {p}" for p in set(_pids_of("systemd-udevd")) - self.udevd_pids]
        found += [f"file {d}" for d in set(_udevd_dirs()) - self.udevd_dirs]
        rules = RUNTIME_RULES / f"70-aklited-sim-{os.getpid()}.rules"
        found += [f"file {rules}"] if rules.exists() else []
        found += [f"directory {work}"] if work.exists() and not keep else []
        return found


def _under(path: str, work: Path) -> bool:
    return path == str(work) or path.startswith(f"{work}/")


def _loop_backing_files() -> list[tuple[str, str]]:
    attached = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):  # detached meanwhile
            attached.append((f"/dev/{backing.parts[3]}", backing.read_text().strip()))
    return attached


def _mountpoints() -> list[str]:
    with Path("/proc/self/mounts").open(encoding="utf-8") as mounts:
        return [line.split()[1] for line in mounts]


def _cmdlines() -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # exited meanwhile
                raw = (entry / "cmdline").read_bytes()
                found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _pids_of(program: str) -> list[int]:
    return [pid for pid, cmd in _cmdlines() if cmd.split(" ", 1)[0].endswith(f"/{program}")]


def _udevd_dirs() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("udevd-*"))


async def demo(work: Path, checks: Checklist) -> None:
    say("0. A simulated LmP device: sysroot, dockerd, system bus, systemd-udevd")
    async with simulated_world(work, settings="reboot_delay_s = 0\n") as world:
        print(f"work directory: {work}")
        print(f"system bus {world.bus_address} (aklited's shipped policy)")
        try:
            await story(world, checks)
        finally:
            say("7. Tear down: the daemon, udevd, the bus, dockerd, the sysroot")


def main() -> int:
    parser = argparse.ArgumentParser(prog="aklited-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("aklited demo: run as root (it attaches loop devices and starts daemons)")
        return 1
    configure_logging(target="console", level=logging.WARNING)
    # The daemon's lines are shown here; under a systemd unit they would go to its journal.
    os.environ.pop("JOURNAL_STREAM", None)
    before = Machine.now()
    work = Path(tempfile.mkdtemp(prefix="aklited-demo-"))
    checks = Checklist()
    try:
        asyncio.run(demo(work, checks))
    except Exception as e:  # the checklist below says what did not happen
        print(f"\nthe demo stopped: {type(e).__name__}: {e}", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            asyncio.run(remove_tree(work))
    left = before.leftovers(work, keep=args.keep)
    for item in left:
        print(f"left behind: {item}")
    checks.check(Step.NOTHING_LEFT, not left)
    for step in Step:
        print(f"  [{'x' if step in checks.happened else ' '}] {step.value}")
    missing = checks.missing()
    if missing:
        say("Demo FAILED: " + "; ".join(step.value for step in missing))
        return 1
    say("Demo finished: the device runs release 2; nothing is left behind")
    return 0


if __name__ == "__main__":
    sys.exit(main())
