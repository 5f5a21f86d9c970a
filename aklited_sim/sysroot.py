"""Build a simulated LmP rootfs: trees, commits, a sysroot, deployments and "reboots".

A tree has what ``ostree admin deploy`` insists on (a kernel under
``usr/lib/modules/<kver>/vmlinuz`` and ``usr/lib/os-release`` with ``ID``/``PRETTY_NAME``)
plus whatever files a test wants. The sysroot is made with ``ostree admin init-fs`` and
``os-init``. A "reboot" writes the kernel command line file the way a bootloader would
pass it: the ``options`` of the chosen deployment's boot entry, with its
``ostree=/ostree/boot.N/<os>/<bootcsum>/<serial>``.

Example::

    device = await make_device(tmp_path / "device", osname="lmp", version="1")
    rootfs = device.rootfs()            # an OstreeSysroot on the simulated sysroot
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aklited.errors import RootfsSysrootError
from aklited.rootfs import status as ostree_status
from aklited.rootfs.cli import run_ostree
from aklited.rootfs.sysroot import OstreeSysroot

DEFAULT_KVER = "6.1.24-lmp-standard"
DEFAULT_KARGS = ("root=LABEL=otaroot", "rootfstype=ext4", "console=ttyS0,115200")
# What a simulated sysroot keeps free (see init_sysroot).
SIM_RESERVE = "1MB"


@dataclass(frozen=True, slots=True)
class SimDevice:
    """A simulated device's rootfs: where its sysroot and kernel command line live.

    Attributes:
        root: the directory holding everything below.
        sysroot: the OSTree sysroot (``pacman.sysroot``).
        osname: the stateroot (``pacman.os``).
        kernel_cmdline: the file standing in for ``/proc/cmdline``.
        repo: the repo the initial commit came from (archive mode).
        initial_commit: the commit the device was set up with.
    """

    root: Path
    sysroot: Path
    osname: str
    kernel_cmdline: Path
    repo: Path
    initial_commit: str

    def rootfs(self, *, verify_objects: bool = True) -> OstreeSysroot:
        """An adapter on this device's sysroot and kernel command line."""
        return OstreeSysroot(
            sysroot=self.sysroot,
            osname=self.osname,
            kernel_cmdline=self.kernel_cmdline,
            verify_objects=verify_objects,
        )


async def _ostree(args: list[str], what: str) -> str:
    output = await run_ostree(args, error=RootfsSysrootError, what=what)
    return output.stdout.strip()


def _write_tree(
    tree: Path,
    *,
    version: str,
    os_id: str,
    kver: str,
    kernel: bytes,
    files: Mapping[str, bytes],
) -> None:
    modules = tree / "usr" / "lib" / "modules" / kver
    modules.mkdir(parents=True, exist_ok=True)
    (modules / "vmlinuz").write_bytes(kernel)
    (tree / "usr" / "lib" / "os-release").write_text(
        f'ID={os_id}\nNAME="Linux-microPlatform"\nPRETTY_NAME="Linux-microPlatform {version}"\n'
        f"VERSION={version}\nVERSION_ID={version}\n",
        encoding="utf-8",
    )
    etc = tree / "usr" / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hostname").write_text("lmp-sim\n", encoding="utf-8")
    (etc / "lmp-release").write_text(f"{version}\n", encoding="utf-8")
    for relative, content in files.items():
        path = tree / relative.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


async def make_tree(
    tree: Path,
    *,
    version: str,
    os_id: str = "lmp",
    kver: str = DEFAULT_KVER,
    kernel: bytes | None = None,
    files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write a deployable rootfs tree.

    Args:
        tree: the directory to fill (created if missing).
        version: goes into os-release and ``/usr/etc/lmp-release``.
        os_id: os-release ``ID``.
        kver: the kernel version directory under ``usr/lib/modules``.
        kernel: the kernel image bytes (a different kernel gives a different boot checksum);
            by default the same for every version.
        files: extra files, path relative to the tree root -> content.

    Returns:
        ``tree``.
    """
    await asyncio.to_thread(
        _write_tree,
        tree,
        version=version,
        os_id=os_id,
        kver=kver,
        kernel=kernel if kernel is not None else f"kernel {kver}\n".encode(),
        files=files or {},
    )
    return tree


def _random_files(directory: Path, count: int, size: int, prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        with (directory / f"{prefix}{index:05d}").open("wb") as f:
            remaining = size
            while remaining:
                chunk = min(remaining, 1 << 20)
                f.write(os.urandom(chunk))
                remaining -= chunk


async def write_random_files(directory: Path, *, count: int, size: int, prefix: str = "f") -> None:
    """Write ``count`` files of ``size`` random (incompressible) bytes into ``directory``."""
    await asyncio.to_thread(_random_files, directory, count, size, prefix)


async def init_repo(repo: Path, *, mode: str = "archive") -> Path:
    """Create an OSTree repo (a bundle's ``ostree_repo`` is ``archive``)."""
    await asyncio.to_thread(repo.mkdir, parents=True, exist_ok=True)
    await _ostree([f"--repo={repo}", "init", f"--mode={mode}"], f"creating repo {repo}")
    return repo


async def commit_tree(
    repo: Path,
    tree: Path,
    *,
    subject: str,
    version: str | None = None,
    branch: str | None = None,
    sizes: bool = False,
) -> str:
    """Commit ``tree`` into ``repo`` and return the commit hash.

    Args:
        repo: the repo.
        tree: the directory to commit.
        subject: the commit subject.
        version: the ``version`` metadata (shown by ``ostree admin status``).
        branch: a ref to point at the commit; by default the commit has no ref, like the
            commits aklited pulls by hash.
        sizes: record every object's size in the commit (``--generate-sizes``, an
            ``archive`` repo only), as a factory may.
    """
    args = [f"--repo={repo}", "commit", f"--tree=dir={tree}", f"--subject={subject}"]
    args += [f"--branch={branch}"] if branch else ["--orphan"]
    if sizes:
        args.append("--generate-sizes")
    if version is not None:
        args.append(f"--add-metadata-string=version={version}")
    return await _ostree(args, f"committing {tree} into {repo}")


async def init_sysroot(sysroot: Path, *, osname: str, reserve: str = SIM_RESERVE) -> Path:
    """``ostree admin init-fs`` + ``os-init``: an empty sysroot for ``osname``.

    ``reserve`` is the repo's ``core.min-free-space-size``. ostree's default, 3 % of the
    filesystem, would make a simulated device on the host's disk refuse every pull once
    that disk is 97 % full, whatever the update's size.
    """
    await asyncio.to_thread(sysroot.mkdir, parents=True, exist_ok=True)
    await _ostree(["admin", "init-fs", str(sysroot)], f"creating sysroot {sysroot}")
    await _ostree(["admin", "os-init", f"--sysroot={sysroot}", osname], f"initialising {osname}")
    repo = sysroot / "ostree" / "repo"
    await _ostree(
        [f"--repo={repo}", "config", "set", "core.min-free-space-size", reserve],
        f"setting the free-space reserve of {repo}",
    )
    return sysroot


async def deploy_commit(
    sysroot: Path,
    *,
    osname: str,
    source_repo: Path,
    commit: str,
    kargs: Sequence[str] = DEFAULT_KARGS,
) -> None:
    """Pull and deploy a commit with plain ostree commands, as a factory image would have it.

    ``kargs`` replace the merge deployment's kernel arguments; pass ``()`` to keep them.
    """
    repo = sysroot / "ostree" / "repo"
    await _ostree([f"--repo={repo}", "pull-local", str(source_repo), commit], f"pulling {commit}")
    args = ["admin", "deploy", f"--sysroot={sysroot}", f"--os={osname}"]
    args += [f"--karg={karg}" for karg in kargs]
    await _ostree([*args, commit], f"deploying {commit}")


async def reboot(device: SimDevice, *, position: int = 0) -> str:
    """ "Boot" a deployment: write its boot entry's options to the kernel command line file.

    Args:
        device: the simulated device.
        position: which deployment of ``device.osname`` the bootloader starts, counting in
            bootloader order: 0 the default, 1 the next one (a bootloader that fell back).

    Returns:
        The ``<checksum>.<serial>`` name of the deployment now booted.

    Raises:
        LookupError: no such deployment, or it has no boot entry.
    """
    status = await device.rootfs().status()
    candidates = [d for d in status.deployments if d.osname == device.osname]
    if position >= len(candidates):
        raise LookupError(f"no deployment at position {position} of {device.osname}")
    chosen = candidates[position]
    entries = await asyncio.to_thread(ostree_status.read_boot_entries, device.sysroot)
    options = entries.get(chosen.name)
    if not options:
        raise LookupError(f"deployment {chosen.name} has no boot entry")
    await asyncio.to_thread(
        device.kernel_cmdline.write_text, " ".join(options) + "\n", encoding="utf-8"
    )
    return chosen.name


async def make_device(
    root: Path,
    *,
    osname: str = "lmp",
    version: str = "1",
    files: Mapping[str, bytes] | None = None,
    kargs: Sequence[str] = DEFAULT_KARGS,
) -> SimDevice:
    """A device booted into its first deployment, everything under ``root``.

    Layout: ``root/sysroot`` (the sysroot), ``root/cmdline`` (the kernel command line),
    ``root/factory-repo`` and ``root/factory-tree`` (where the initial commit came from).
    """
    tree = await make_tree(root / "factory-tree", version=version, files=files)
    repo = await init_repo(root / "factory-repo")
    commit = await commit_tree(repo, tree, subject=f"factory {version}", version=version)
    sysroot = await init_sysroot(root / "sysroot", osname=osname)
    await deploy_commit(sysroot, osname=osname, source_repo=repo, commit=commit, kargs=kargs)
    device = SimDevice(
        root=root,
        sysroot=sysroot,
        osname=osname,
        kernel_cmdline=root / "cmdline",
        repo=repo,
        initial_commit=commit,
    )
    await reboot(device)
    return device


def _deployment_dirs(root: Path) -> list[Path]:
    """Deployment directories under ``root`` (``.../ostree/deploy/<os>/deploy/<name>``)."""
    found: list[Path] = []
    for dirpath, dirnames, _files in os.walk(root):
        current = Path(dirpath)
        if current.name == "deploy" and current.parent.parent.name == "deploy":
            found.extend(current / name for name in dirnames)
            dirnames[:] = []  # the checked-out trees hold nothing more of interest
        elif current.name == "objects" and current.parent.name == "repo":
            dirnames[:] = []
    return found


async def remove_tree(root: Path) -> None:
    """Delete a directory holding simulated sysroots.

    ostree marks every deployment directory immutable (``chattr +i``), so a plain recursive
    delete fails; the flag is cleared first.
    """
    if not await asyncio.to_thread(root.exists):
        return
    for deployment in await asyncio.to_thread(_deployment_dirs, root):
        proc = await asyncio.create_subprocess_exec(
            "chattr", "-i", str(deployment), stderr=asyncio.subprocess.PIPE
        )
        _, stderr = await proc.communicate()
        if proc.returncode != 0:
            raise OSError(f"chattr -i {deployment} failed: {stderr.decode().strip()}")
    await asyncio.to_thread(shutil.rmtree, root)
