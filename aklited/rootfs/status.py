"""Reading deployments from a sysroot: ``ostree admin status``, boot links, kernel command line.

Pure parsing and blocking file-system look-ups; :mod:`aklited.rootfs.sysroot` runs the latter in a
thread. Nothing here is cached: every answer comes from what the sysroot holds right now.

Which deployment is booted is decided like this, most exact first:

1. the deployment directory that *is* the running root (same device and inode as ``/``),
   which is how libostree itself knows on a real device;
2. the ``ostree=/ostree/boot.N/<os>/<bootcsum>/<serial>`` argument of the kernel command
   line resolved through the sysroot's boot links, as ``ostree-prepare-root`` does at boot
   (a simulated device "boots" by writing that file).

Boot links go stale: every deploy swaps ``boot.0``/``boot.1``, deletes the other and may
renumber the serials, so after a deploy made since boot the argument no longer names the
booted deployment. A real device never gets there (step 1 answers). For a simulated boot
(a command line *file*, written at "boot") links newer than that file are stale; the booted
deployment is then the one among those that existed at boot (``.origin`` no newer than the
file) with the argument's kernel checksum and serial. When even that is ambiguous, no
deployment is reported as booted rather than a wrong one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

_HEADER = re.compile(
    r"^(?P<mark>[* ]) (?P<osname>\S+) (?P<checksum>[0-9a-f]{64})\.(?P<serial>\d+)(?P<rest>.*)$"
)
_DETAIL = re.compile(r"^\s{2,}(?P<key>[^:]+):\s*(?P<value>.*)$")
_BOOTLINK = re.compile(
    r"^/ostree/boot\.(?P<bootversion>[01])/(?P<osname>[^/]+)/(?P<bootcsum>[0-9a-f]{64})/(?P<serial>\d+)/?$"
)
_DEPLOY_DIR = re.compile(r"^(?P<checksum>[0-9a-f]{64})\.(?P<serial>\d+)$")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment of the sysroot, in bootloader order (index 0 boots by default).

    Attributes:
        checksum: the OSTree commit the deployment was checked out from.
        serial: the deployment serial (several deployments of one commit count up from 0).
        osname: the stateroot (``pacman.os``).
        index: position in the bootloader menu; 0 is the default.
        version: the commit's ``version`` metadata, if any.
        origin: the origin refspec (aklited deploys by commit, so usually the checksum).
        pinned: protected from pruning by ``ostree admin pin``.
        booted: the deployment the device is running.
        pending: the deployment the next boot will start, which is not the booted one.
        rollback: the deployment the bootloader falls back to (the first after the booted one).
        kernel_args: the ``options`` of its boot entry (empty when it has none).
    """

    checksum: str
    serial: int
    osname: str
    index: int
    version: str | None = None
    origin: str | None = None
    pinned: bool = False
    booted: bool = False
    pending: bool = False
    rollback: bool = False
    kernel_args: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """``<checksum>.<serial>``, the directory name under ``ostree/deploy/<os>/deploy``."""
        return f"{self.checksum}.{self.serial}"


@dataclass(frozen=True, slots=True)
class SysrootStatus:
    """All deployments of the sysroot, with the flags for the adapter's ``osname``."""

    osname: str
    deployments: tuple[Deployment, ...]

    @property
    def booted(self) -> Deployment | None:
        """The deployment the device runs, if it could be determined."""
        return next((d for d in self.deployments if d.booted), None)

    @property
    def pending(self) -> Deployment | None:
        """The deployment the next boot starts, when that is not the booted one."""
        return next((d for d in self.deployments if d.pending), None)

    @property
    def rollback(self) -> Deployment | None:
        """The deployment the bootloader falls back to."""
        return next((d for d in self.deployments if d.rollback), None)

    @property
    def default(self) -> Deployment | None:
        """The first deployment of ``osname``: what the next boot starts."""
        return next((d for d in self.deployments if d.osname == self.osname), None)


@dataclass(frozen=True, slots=True)
class BootArgument:
    """The parts of an ``ostree=`` kernel argument."""

    path: str
    bootversion: int
    osname: str
    bootcsum: str
    serial: int


def parse_admin_status(text: str) -> list[Deployment]:
    """Parse ``ostree admin status`` output into deployments (flags not yet set).

    Args:
        text: the command's stdout.

    Returns:
        The deployments in the order printed, which is the bootloader order.

    Raises:
        ValueError: a line under a deployment that is not a ``Key: value`` detail, or
            details before any deployment.
    """
    found: list[Deployment] = []
    for line in text.splitlines():
        if not line.strip() or line.strip() == "No deployments.":
            continue
        if header := _HEADER.match(line):
            found.append(
                Deployment(
                    checksum=header["checksum"],
                    serial=int(header["serial"]),
                    osname=header["osname"],
                    index=len(found),
                )
            )
            continue
        detail = _DETAIL.match(line)
        if not found:
            raise ValueError(f"unexpected line before any deployment: {line!r}")
        if detail is None:
            # Free-form notes (e.g. "Deployment is finalization-locked") carry nothing we use.
            continue
        key, value = detail["key"].strip().lower(), detail["value"].strip()
        last = found[-1]
        if key == "version":
            found[-1] = replace(last, version=value)
        elif key == "origin refspec":
            found[-1] = replace(last, origin=value)
        elif key == "pinned":
            found[-1] = replace(last, pinned=value == "yes")
    return found


def parse_boot_argument(cmdline: str) -> BootArgument | None:
    """Find the ``ostree=`` argument in a kernel command line.

    Args:
        cmdline: the command line (``/proc/cmdline`` or a file standing in for it).

    Returns:
        Its parts, or None when the command line has no well-formed ``ostree=`` argument.
    """
    value: str | None = None
    for arg in cmdline.split():
        if arg.startswith("ostree="):
            value = arg.removeprefix("ostree=")  # the last one wins, as in the kernel
    if value is None or (match := _BOOTLINK.match(value)) is None:
        return None
    return BootArgument(
        path=value.rstrip("/"),
        bootversion=int(match["bootversion"]),
        osname=match["osname"],
        bootcsum=match["bootcsum"],
        serial=int(match["serial"]),
    )


def resolve_boot_argument(sysroot: Path, argument: BootArgument) -> tuple[str, str] | None:
    """Follow an ``ostree=`` path through the sysroot's boot links to its deployment.

    Blocking: run it in a thread.

    Args:
        sysroot: the sysroot directory (holding ``ostree/`` and ``boot/``).
        argument: the parsed ``ostree=`` argument.

    Returns:
        ``(osname, "<checksum>.<serial>")`` of the deployment it points at, or None when the
        link is gone or leads outside the sysroot's deployments.
    """
    base = sysroot.resolve()
    link = base / argument.path.lstrip("/")
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    deploy_root = base / "ostree" / "deploy"
    try:
        relative = target.relative_to(deploy_root)
    except ValueError:
        return None
    parts = relative.parts
    if len(parts) != 3 or parts[1] != "deploy" or not _DEPLOY_DIR.match(parts[2]):
        return None
    return parts[0], parts[2]


def deployment_dir(sysroot: Path, deployment: Deployment) -> Path:
    """The checked-out tree of a deployment."""
    return sysroot / "ostree" / "deploy" / deployment.osname / "deploy" / deployment.name


def find_running_deployment(
    sysroot: Path, deployments: list[Deployment], *, root: Path
) -> Deployment | None:
    """The deployment whose directory is the running root (same device and inode).

    Blocking: run it in a thread.
    """
    try:
        root_stat = root.stat()
    except OSError:
        return None
    for deployment in deployments:
        try:
            st = deployment_dir(sysroot, deployment).stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (root_stat.st_dev, root_stat.st_ino):
            return deployment
    return None


def mark_deployments(
    deployments: list[Deployment], *, osname: str, booted: Deployment | None
) -> list[Deployment]:
    """Set the booted, pending and rollback flags the way libostree defines them.

    For the deployments of ``osname`` in bootloader order: the first one before the booted
    deployment is pending, the first one after it is the rollback. With no booted deployment
    known, the default one is pending and nothing is a rollback.
    """
    marked: list[Deployment] = []
    seen_booted = False
    pending_set = rollback_set = False
    for deployment in deployments:
        is_booted = booted is not None and deployment.name == booted.name
        is_pending = is_rollback = False
        if deployment.osname == osname and not is_booted:
            if not seen_booted and not pending_set:
                is_pending = pending_set = True
            elif seen_booted and not rollback_set:
                is_rollback = rollback_set = True
        seen_booted = seen_booted or is_booted
        marked.append(
            replace(deployment, booted=is_booted, pending=is_pending, rollback=is_rollback)
        )
    return marked


def read_text_if_exists(path: Path) -> str | None:
    """A small text file's content, or None when it does not exist. Blocking."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None


def deploy_dir_names(sysroot: Path, osname: str) -> set[str]:
    """Names of the checked-out deployment directories of ``osname``. Blocking."""
    try:
        entries = list((sysroot / "ostree" / "deploy" / osname / "deploy").iterdir())
    except FileNotFoundError:
        return set()
    return {entry.name for entry in entries if _DEPLOY_DIR.match(entry.name)}


def read_boot_entries(sysroot: Path) -> dict[str, tuple[str, ...]]:
    """Kernel arguments of each deployment, from the current BLS entries. Blocking.

    Returns:
        ``"<checksum>.<serial>"`` -> the entry's ``options`` split into arguments, for every
        entry whose ``ostree=`` argument resolves to a deployment.
    """
    entries_dir = sysroot / "boot" / "loader" / "entries"
    try:
        names = sorted(entry.name for entry in entries_dir.iterdir())
    except FileNotFoundError:
        return {}
    kargs: dict[str, tuple[str, ...]] = {}
    for name in names:
        if not name.endswith(".conf"):
            continue
        text = read_text_if_exists(entries_dir / name) or ""
        for line in text.splitlines():
            key, _, value = line.strip().partition(" ")
            if key != "options":
                continue
            argument = parse_boot_argument(value)
            resolved = resolve_boot_argument(sysroot, argument) if argument else None
            if resolved is not None:
                kargs[resolved[1]] = tuple(value.split())
    return kargs


def _boot_argument_of(kargs: tuple[str, ...]) -> BootArgument | None:
    return parse_boot_argument(" ".join(kargs))


def resolve_booted(
    sysroot: Path,
    deployments: list[Deployment],
    argument: BootArgument,
    *,
    kargs: dict[str, tuple[str, ...]],
    boot_time_ns: int | None,
) -> Deployment | None:
    """The deployment an ``ostree=`` argument booted. Blocking.

    Args:
        sysroot: the sysroot.
        deployments: the current deployments, in bootloader order.
        argument: the ``ostree=`` argument of the boot.
        kargs: kernel arguments per deployment name, from :func:`read_boot_entries`.
        boot_time_ns: for a simulated boot, when its command line file was written; None for
            a real ``/proc/cmdline``, whose time means nothing.
    """
    link = sysroot / "ostree" / f"boot.{argument.bootversion}"
    stale = False
    if boot_time_ns is not None:
        try:
            stale = link.lstat().st_mtime_ns > boot_time_ns
        except OSError:
            stale = True
    if boot_time_ns is None or not stale:
        resolved = resolve_boot_argument(sysroot, argument)
        return next(
            (d for d in deployments if resolved is not None and (d.osname, d.name) == resolved),
            None,
        )
    same_kernel: list[Deployment] = []
    for deployment in deployments:
        if deployment.osname != argument.osname:
            continue
        origin = deployment_dir(sysroot, deployment).with_name(f"{deployment.name}.origin")
        try:
            created = origin.stat().st_mtime_ns
        except OSError:
            continue
        entry = _boot_argument_of(kargs.get(deployment.name, ()))
        if created <= boot_time_ns and entry is not None and entry.bootcsum == argument.bootcsum:
            same_kernel.append(deployment)
    # Serials count the deployments with one kernel in bootloader order; deploys only add
    # in front, so the ones that existed at boot kept their order.
    if argument.serial < len(same_kernel):
        return same_kernel[argument.serial]
    return None
