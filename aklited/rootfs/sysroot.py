"""The OSTree rootfs: pull a commit from a bundle, deploy it, know what is booted, roll back, prune.

An async adapter over the ``ostree`` command line, which every LmP image has. Every answer
is read from the sysroot (``ostree admin status``, the boot links and entries, the
deployment directories) and the kernel command line; within one engine call
(:meth:`OstreeSysroot.kept_readings`) a reading is kept until the adapter itself changes
the sysroot, and the walk of a bundle's commit is kept for the pull after it.

Trust comes from TUF, which names the commit by its sha256. The adapter checks that the
bundle's commit object really hashes to that name before copying anything, makes ostree
verify every object it copies (``pull-local --untrusted``), and checks the commit again in
the sysroot repo afterwards.

Typical use by the engine::

    rootfs = OstreeSysroot(sysroot=Path("/sysroot"), osname="lmp")
    await rootfs.pull(source_repo=bundle / "ostree_repo", commit=sha, on_progress=report)
    new = await rootfs.deploy(commit=sha)          # pending until the next boot
    ...                                            # reboot
    status = await rootfs.status()                 # status.booted.checksum == sha ?
    await rootfs.prune()                           # after a successful finalize
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from aklited import drivefs
from aklited.errors import (
    RootfsCopyError,
    RootfsCorruptError,
    RootfsError,
    RootfsNoSpaceError,
    RootfsRollbackError,
    RootfsSysrootError,
)
from aklited.host.writeback import writing_back
from aklited.rootfs import content as ostree_content
from aklited.rootfs import repo as ostree_repo
from aklited.rootfs import space as ostree_space
from aklited.rootfs import status as ostree_status
from aklited.rootfs import walk as ostree_walk
from aklited.rootfs.cli import ProgressCallback, PullProgress, run_ostree
from aklited.rootfs.space import SpaceEstimate
from aklited.rootfs.status import Deployment, SysrootStatus
from aklited.tasks import to_completion

__all__ = [
    "Deployment",
    "OstreeSysroot",
    "ProgressCallback",
    "PruneResult",
    "PullResult",
    "SpaceEstimate",
    "SysrootStatus",
]

log = structlog.get_logger(__name__)

_COMMIT = re.compile(r"^[0-9a-f]{64}$")
_MIB = 1024 * 1024

_DELETED = re.compile(r"Deleted (\d+) objects?")


@dataclass(frozen=True, slots=True)
class PullResult:
    """The outcome of :meth:`OstreeSysroot.pull`.

    Attributes:
        commit: the commit now in the sysroot repo.
        pulled: False when the commit was already there and nothing was copied.
        objects: objects ostree reported as imported.
        estimate: the pull's space check (None when nothing was pulled).
    """

    commit: str
    pulled: bool
    objects: int = 0
    estimate: SpaceEstimate | None = None


@dataclass(frozen=True, slots=True)
class PruneResult:
    """The outcome of :meth:`OstreeSysroot.prune`."""

    undeployed: tuple[Deployment, ...]
    deleted_objects: int


# A commit the repo holds already: nothing of it to write.
_NOTHING_TO_PULL = SpaceEstimate(
    missing_objects=0, missing_bytes=0, required_bytes=0, free_bytes=0, reserved_bytes=0
)


class OstreeSysroot:
    """The OSTree sysroot of one device, driven through the ``ostree`` command line."""

    def __init__(
        self,
        *,
        sysroot: Path,
        osname: str,
        kernel_cmdline: Path = Path("/proc/cmdline"),
        running_root: Path = Path("/"),
        verify_objects: bool = True,
        ostree_bin: str = "ostree",
    ) -> None:
        """Describe the sysroot; nothing is read until a method is called.

        Args:
            sysroot: the directory holding ``ostree/`` and ``boot/`` (``pacman.sysroot``).
            osname: the stateroot to deploy (``pacman.os``).
            kernel_cmdline: where the ``ostree=`` boot argument is read from.
            running_root: the running root; a deployment with its device and inode is the
                booted one (how libostree itself knows on a real device).
            verify_objects: have ostree checksum every object it copies from the bundle.
            ostree_bin: the ``ostree`` program.
        """
        self.sysroot = sysroot
        self.osname = osname
        self.kernel_cmdline = kernel_cmdline
        self.running_root = running_root
        self.verify_objects = verify_objects
        self.ostree_bin = ostree_bin
        # The last walk of a bundle's commit, for the pull after it.
        self._walked: tuple[_WalkKey, ostree_space.TreeListing] | None = None
        # The commit pull_size() last sized, and its estimate.
        self._sized: tuple[str, SpaceEstimate] | None = None
        # kept_readings(): how deep, the reading kept, and the changes made so far.
        self._keeping = 0
        self._kept: SysrootStatus | None = None
        self._generation = 0

    @property
    def repo(self) -> Path:
        """The sysroot repo, ``<sysroot>/ostree/repo``."""
        return self.sysroot / "ostree" / "repo"

    async def _ostree(
        self,
        args: list[str],
        *,
        error: type[RootfsError],
        what: str,
        on_line: Callable[[str], None] | None = None,
        classify: Callable[[str], type[RootfsError] | None] | None = None,
    ) -> str:
        output = await run_ostree(
            args,
            error=error,
            what=what,
            on_line=on_line,
            ostree_bin=self.ostree_bin,
            classify=classify,
        )
        return output.stdout

    async def _require_sysroot(self) -> None:
        if not await asyncio.to_thread((self.repo / "config").is_file):
            raise RootfsSysrootError(
                f"no OSTree sysroot at {self.sysroot}: {self.repo}/config is missing"
            )

    @contextmanager
    def kept_readings(self) -> Iterator[None]:
        """Within it, what this object read is kept for later calls: the deployments, read
        once by :meth:`status` until this object changes them (deploy, undeploy), and the
        walk of a bundle's commit by :meth:`pull_size`, for the :meth:`pull` after it.

        For one engine call holding the update lock, so that nothing else changes the
        deployments meanwhile: an install asks for the booted commit more than once, and
        each ``ostree admin status`` costs tens of milliseconds. Outside it every call
        reads afresh (the booted deployment changes with a boot, simulated ones included;
        a drive plugged in later may hold anything at the same path).
        """
        if not self._keeping:
            # A reading under way since before the call began is not the call's to keep.
            self._generation += 1
        self._keeping += 1
        try:
            yield
        finally:
            self._keeping -= 1
            if not self._keeping:
                self._kept = None
                self._walked = None

    def _changing(self) -> None:
        """Called before and after every change of the deployments: a kept reading is
        stale, and so is one taken while the change was under way."""
        self._kept = None
        self._generation += 1

    async def status(self) -> SysrootStatus:
        """Read the deployments and which one is booted, pending and the rollback.

        Raises:
            RootfsSysrootError: no sysroot, or ``ostree admin status`` failed or printed
                something unexpected.
        """
        if self._kept is not None:
            return self._kept
        return await self._read_status()

    async def _read_status(self) -> SysrootStatus:
        """:meth:`status`, read afresh (kept for later calls within :meth:`kept_readings`)."""
        generation = self._generation
        await self._require_sysroot()
        text = await self._ostree(
            ["admin", "status", f"--sysroot={self.sysroot}"],
            error=RootfsSysrootError,
            what=f"reading the deployments of {self.sysroot}",
        )
        try:
            deployments = ostree_status.parse_admin_status(text)
        except ValueError as e:
            raise RootfsSysrootError(f"cannot read the deployments of {self.sysroot}: {e}") from e
        booted, kargs = await asyncio.to_thread(self._read_boot_state, deployments)
        marked = ostree_status.mark_deployments(deployments, osname=self.osname, booted=booted)
        with_kargs = tuple(replace(d, kernel_args=kargs.get(d.name, ())) for d in marked)
        status = SysrootStatus(osname=self.osname, deployments=with_kargs)
        if self._keeping and generation == self._generation:
            self._kept = status
        return status

    def _read_boot_state(
        self, deployments: list[Deployment]
    ) -> tuple[Deployment | None, dict[str, tuple[str, ...]]]:
        """Blocking: the booted deployment and the kernel arguments of each deployment."""
        kargs = ostree_status.read_boot_entries(self.sysroot)
        on_disk = {
            name
            for osname in {d.osname for d in deployments}
            for name in ostree_status.deploy_dir_names(self.sysroot, osname)
        }
        if missing := [d.name for d in deployments if d.name not in on_disk]:
            log.warning(
                "deployment directories missing", sysroot=str(self.sysroot), missing=missing
            )
        running = ostree_status.find_running_deployment(
            self.sysroot, deployments, root=self.running_root
        )
        if running is not None:
            return running, kargs
        cmdline = ostree_status.read_text_if_exists(self.kernel_cmdline) or ""
        argument = ostree_status.parse_boot_argument(cmdline)
        if argument is None:
            log.info("no ostree= boot argument", kernel_cmdline=str(self.kernel_cmdline))
            return None, kargs
        booted = ostree_status.resolve_booted(
            self.sysroot,
            deployments,
            argument,
            kargs=kargs,
            boot_time_ns=self._simulated_boot_time(),
        )
        if booted is None:
            log.info("booted deployment unknown", boot_argument=argument.path)
        return booted, kargs

    def _simulated_boot_time(self) -> int | None:
        """When a command line file standing in for /proc/cmdline was written ("booted")."""
        if self.kernel_cmdline.is_relative_to("/proc"):
            return None
        try:
            return self.kernel_cmdline.stat().st_mtime_ns
        except OSError:
            return None

    async def booted_commit(self) -> str | None:
        """The commit of the deployment the device booted, from the kernel command line."""
        booted = (await self.status()).booted
        return booted.checksum if booted is not None else None

    async def pending_commit(self) -> str | None:
        """The commit of a deployment that becomes active at the next boot, if any."""
        pending = (await self.status()).pending
        return pending.checksum if pending is not None else None

    async def verify_content(self, *, source_repo: Path, commit: str) -> int:
        """Check every object of ``commit`` in a bundle's repo, as a pull would; the number
        of file objects hashed (0: not an archive repo, objects checked, not hashed)."""
        return await verify_bundle_commit(source_repo, commit, boundary=source_repo.parent)

    async def has_commit(self, commit: str) -> bool:
        """True when the sysroot repo holds the whole commit (not a partial pull)."""
        _check_commit_name(commit)
        return await asyncio.to_thread(ostree_repo.has_commit, self.repo, commit)

    async def estimate_space(
        self, *, source_repo: Path, commit: str, free: ostree_space.FreeSpace | None = None
    ) -> SpaceEstimate:
        """Estimate what pulling and deploying ``commit`` from ``source_repo`` needs.

        Within :meth:`kept_readings` the walk behind it is kept for the next :meth:`pull`
        of that commit from that repo (free space is read again then). On a drive mounted
        ``nosymfollow`` a link in the repo is refused: ostree could not follow it.

        Args:
            free: weigh it against this (default: the free space now).

        Raises:
            RootfsCopyError: 50 when the bundle repo lacks an object of the commit or the
                drive cannot be read.
            RootfsCorruptError: 70 when an object is unsafe or does not match its name.
        """
        _check_commit_name(commit)
        await self._require_sysroot()
        self._walked = None
        listing = await _checked_listing(source_repo, commit, self.repo)
        if self._keeping:
            self._walked = (await _walk_key(source_repo, commit), listing)
        return await asyncio.to_thread(ostree_space.estimate, self.repo, listing, free)

    async def pull_size(self, *, source_repo: Path, commit: str) -> int:
        """The content bytes a :meth:`pull` of ``commit`` copies; 0 when it is present.

        Raises what :meth:`estimate_space` raises, and RootfsNoSpaceError (60) when the
        commit does not fit even now: whatever is written before the pull (the apps) only
        takes space, so it is refused before that is written.
        """
        self._walked = self._sized = None
        if await self.has_commit(commit):
            self._sized = (commit, _NOTHING_TO_PULL)
            return 0
        estimate = await self.estimate_space(source_repo=source_repo, commit=commit)
        if not estimate.fits:
            raise self._no_space(commit, estimate)
        self._sized = (commit, estimate)
        return estimate.missing_bytes

    async def fits_beside(self, *, commit: str, beside: int) -> bool:
        """Whether ``commit``, as :meth:`pull_size` last sized it, still fits once ``beside``
        more bytes are written to the sysroot's file system first (False when it was not
        sized, or the free space cannot be read)."""
        if self._sized is None or self._sized[0] != commit:
            return False
        try:
            free = await asyncio.to_thread(ostree_space.free_space, self.repo)
        except OSError as e:
            log.warning("cannot read the free space", repo=str(self.repo), error=str(e))
            return False
        now = replace(
            self._sized[1],
            free_bytes=free.free_bytes - beside,
            reserved_bytes=free.reserved_bytes,
        )
        return now.fits

    def _no_space(self, commit: str, estimate: SpaceEstimate) -> RootfsNoSpaceError:
        return RootfsNoSpaceError(
            f"not enough space in {self.sysroot} for commit {commit}: needs "
            f"{_mib(estimate.required_bytes)} and ostree keeps "
            f"{_mib(estimate.reserved_bytes)} free, only {_mib(estimate.free_bytes)} "
            "available; free space on the device and retry"
        )

    async def pull(
        self,
        *,
        source_repo: Path,
        commit: str,
        on_progress: ProgressCallback | None = None,
        on_space_checked: Callable[[], None] | None = None,
    ) -> PullResult:
        """Copy ``commit`` from a bundle's OSTree repo into the sysroot repo.

        Skipped when the sysroot repo already holds the commit. The commit object is
        checked against its name before and after the copy.

        Args:
            source_repo: the bundle's ``ostree_repo/``.
            commit: the sha256 TUF named for the target.
            on_progress: called with (bytes done, bytes to copy, ostree's message): the
                content bytes the commit lacks, spread over the objects ostree reports.
            on_space_checked: called once the space check passed (on a drive the kernel
                guards ostree may have begun meanwhile: the check weighs the space free
                before it did), or once the commit is found present.

        Raises:
            RootfsCopyError: 50 the bundle repo lacks the commit or objects, or the copy
                failed.
            RootfsNoSpaceError: 60 not enough free space.
            RootfsCorruptError: 70 an object or the commit does not match its name.
        """
        _check_commit_name(commit)
        await self._require_sysroot()
        if await self.has_commit(commit):
            await self._verify_commit(self.repo, commit, where="the sysroot repo", load=True)
            log.info("ostree pull skipped: commit present", commit=commit)
            if on_space_checked is not None:
                on_space_checked()
            if on_progress is not None:  # nothing to copy: no bytes to weigh
                on_progress(0, 0, f"commit {commit} already present")
            return PullResult(commit=commit, pulled=False)
        walked = await self._kept_walk(source_repo, commit)
        # Beside the walk only where ostree verifies every object itself: trusting the
        # drive, what it imported before the walk refused would stay in the repo unverified.
        if walked is None and self.verify_objects and await _kernel_guarded(source_repo):
            return await self._pull_beside_walk(
                source_repo, commit, on_progress=on_progress, on_space_checked=on_space_checked
            )
        # The walk behind the estimate is also the gate: it checks every object ostree will
        # read from the drive (and hashes the commit and the tree) before ostree sees it.
        estimate = await self._space_now(source_repo, commit, walked)
        if on_space_checked is not None:
            on_space_checked()
        progress = PullProgress(None, total=0)
        _weigh(progress, on_progress, estimate, source_repo)
        await self._copy(source_repo, commit, progress)
        return await self._pulled(commit, progress, estimate)

    async def _pull_beside_walk(
        self,
        source_repo: Path,
        commit: str,
        *,
        on_progress: ProgressCallback | None,
        on_space_checked: Callable[[], None] | None,
    ) -> PullResult:
        """The pull with the walk beside it, on a drive the kernel keeps from reaching out.

        On a mount that is read-only, ``nodev`` and ``nosymfollow`` (as the daemon mounts
        drives), ostree can neither follow a link nor open a device: the walk is left
        jobs that may be done while ostree copies. A link (inside the bundle or not) is
        refused, since ostree could not follow it. A FIFO where an object should be
        blocks ostree's open until the walk finds it. An update that does not fit is
        found once the walk has sized it against the space free before ostree began
        (ostree's own reserve holds meanwhile). A refusal stops ostree, removes what it
        staged (or, had it finished, marks the commit partial), and is what is raised.
        What ostree opens first (the repo's config, the commit) is checked before it
        starts. Only where ostree verifies every object (``verify_objects``).
        """
        try:
            await asyncio.to_thread(
                ostree_walk.check_repo_entry, source_repo, commit, follow_links=False
            )
        except _BUNDLE_ERRORS as e:
            raise _refused(e, source_repo, commit) from e
        free = await asyncio.to_thread(ostree_space.free_space, self.repo)
        progress = PullProgress(None, total=0)
        copying = asyncio.ensure_future(self._copy(source_repo, commit, progress))
        try:
            estimate = await self._space_now(source_repo, commit, None, free=free)
            if on_space_checked is not None:
                on_space_checked()
        except BaseException:
            await to_completion(lambda: self._stop_copy(copying, commit))
            raise
        _weigh(progress, on_progress, estimate, source_repo)
        await copying  # a cancellation of the caller stops ostree with it
        return await self._pulled(commit, progress, estimate)

    async def _stop_copy(self, copying: asyncio.Future[None], commit: str) -> None:
        """Stop ostree's copy and leave the sysroot repo as it was before it."""
        copying.cancel()
        await asyncio.gather(copying, return_exceptions=True)
        # It may have committed its transaction before it was stopped, however it ended.
        if await self.has_commit(commit):
            await asyncio.to_thread(ostree_repo.mark_partial, self.repo, commit)
            log.info("refused commit marked partial", commit=commit)
        try:
            removed = await asyncio.to_thread(_remove_staging, self.repo)
        except OSError as e:  # the refusal is what matters; ostree reuses what is left
            log.warning("cannot remove what ostree staged", commit=commit, error=str(e))
        else:
            log.info("ostree stopped", commit=commit, staging_removed=removed)

    async def _kept_walk(self, source_repo: Path, commit: str) -> ostree_space.TreeListing | None:
        """The walk :meth:`estimate_space` kept, if it walked this commit of this very repo
        in this engine call (taken: a later pull walks again)."""
        walked, self._walked = self._walked, None
        if walked is None or walked[0] != await _walk_key(source_repo, commit):
            return None
        return walked[1]

    async def _space_now(
        self,
        source_repo: Path,
        commit: str,
        walked: ostree_space.TreeListing | None,
        *,
        free: ostree_space.FreeSpace | None = None,
    ) -> SpaceEstimate:
        """The space check of a pull: over ``walked``, or a walk now, against ``free`` (by
        default the free space now). Raises RootfsNoSpaceError (60) when it does not fit."""
        if walked is None:
            estimate = await self.estimate_space(source_repo=source_repo, commit=commit, free=free)
        else:
            estimate = await asyncio.to_thread(ostree_space.estimate, self.repo, walked, free)
        log.info(
            "ostree space check",
            commit=commit,
            required_mib=estimate.required_bytes // _MIB,
            free_mib=estimate.free_bytes // _MIB,
            reserved_mib=estimate.reserved_bytes // _MIB,
        )
        if not estimate.fits:
            raise self._no_space(commit, estimate)
        return estimate

    async def _copy(self, source_repo: Path, commit: str, progress: PullProgress) -> None:
        args = [f"--repo={self.repo}", "pull-local"]
        if self.verify_objects:
            args.append("--untrusted")
        async with writing_back(self.repo):
            await self._ostree(
                [*args, str(source_repo), commit],
                error=RootfsCopyError,
                what=f"copying commit {commit} from {source_repo}",
                on_line=progress.on_line,
                classify=_pull_failure,
            )

    async def _pulled(
        self, commit: str, progress: PullProgress, estimate: SpaceEstimate
    ) -> PullResult:
        # Same bytes as the bundle's verified commit object: hashing them again is enough.
        await self._verify_commit(self.repo, commit, where="the sysroot repo")
        # ostree's summary line may not come (its console output changes between versions).
        progress.report(progress.total, f"commit {commit} copied")
        log.info("ostree pull done", commit=commit, objects=progress.imported)
        return PullResult(commit=commit, pulled=True, objects=progress.imported, estimate=estimate)

    async def _verify_commit(
        self, repo: Path, commit: str, *, where: str, load: bool = False
    ) -> None:
        """The commit object must hash to its name (and, with ``load``, parse as a commit)."""
        path = ostree_repo.commit_path(repo, commit)
        try:
            actual = await asyncio.to_thread(ostree_repo.sha256_file, path)
        except OSError as e:
            raise RootfsCorruptError(f"commit {commit} cannot be read in {where}: {e}") from e
        if actual != commit:
            raise RootfsCorruptError(
                f"commit {commit} in {where} failed verification: its object {path} "
                f"hashes to {actual}"
            )
        if load:
            await self._ostree(
                [f"--repo={repo}", "show", commit],
                error=RootfsCorruptError,
                what=f"loading commit {commit} in {where}",
            )

    async def deploy(self, *, commit: str) -> Deployment:
        """Deploy ``commit`` (already pulled) for ``osname`` as the next boot's default.

        The merge deployment's kernel arguments and ``/etc`` are carried over (what
        ``ostree admin deploy`` does when given no ``--karg*`` option). The deployments kept
        are the new one and the booted one, as on a device where libostree knows it is
        booted.

        Returns:
            The new deployment (pending unless ``commit`` is the booted one).

        Raises:
            RootfsCopyError: 50 the commit is not in the sysroot repo.
            RootfsSysrootError: 1 the deploy failed.
        """
        _check_commit_name(commit)
        await self._require_sysroot()
        if not await self.has_commit(commit):
            raise RootfsCopyError(
                f"commit {commit} is not in {self.repo}: pull it before deploying"
            )
        before = await self.status()
        # libostree keeps the booted deployment itself only when it knows it is booted;
        # when the booted one is not the default (e.g. after a bootloader rollback, or in a
        # simulated sysroot) keep everything and drop the extra deployments ourselves.
        booted = before.booted
        default = before.default
        retain = booted is not None and default is not None and booted.name != default.name
        args = ["admin", "deploy", f"--sysroot={self.sysroot}", f"--os={self.osname}"]
        if retain:
            args.append("--retain")
        self._changing()
        try:
            await self._ostree(
                [*args, commit],
                error=RootfsSysrootError,
                what=f"deploying commit {commit} in {self.sysroot}",
            )
        finally:
            self._changing()
        after = await self._read_status()
        new = after.default
        if new is None or new.checksum != commit:
            raise RootfsSysrootError(
                f"deploying commit {commit} in {self.sysroot} did not make it the default"
            )
        if retain and booted is not None:
            keep = {new.name, booted.name}
            extra = [
                d
                for d in after.deployments
                if d.osname == self.osname and d.name not in keep and not d.pinned
            ]
            await self._undeploy(extra)
            new = (await self._read_status()).default
            if new is None or new.checksum != commit:
                raise RootfsSysrootError(
                    f"removing old deployments of {self.sysroot} lost the new one of {commit}"
                )
        log.info("ostree deployed", commit=commit, deployment=new.name, pending=new.pending)
        return new

    async def rollback(self, *, commit: str | None = None) -> Deployment:
        """Make the previous target the default again by deploying its commit anew.

        Args:
            commit: the commit to return to; by default the rollback deployment's.

        Returns:
            The new deployment, pending for the next boot.

        Raises:
            RootfsRollbackError: 120 no rollback deployment, its commit is gone, or the deploy
                failed.
        """
        if commit is None:
            status = await self.status()
            if status.rollback is None:
                raise RootfsRollbackError(
                    f"no deployment of {self.osname} to roll back to in {self.sysroot}"
                )
            commit = status.rollback.checksum
        try:
            deployment = await self.deploy(commit=commit)
        except RootfsError as e:
            raise RootfsRollbackError(f"rollback failed: {e.message}") from e
        log.info("ostree rolled back", commit=commit, deployment=deployment.name)
        return deployment

    async def prune(self) -> PruneResult:
        """Remove deployments beyond booted, pending and rollback, then unreferenced objects.

        Call it after a successful finalize, never between a pull and its deploy: a pulled
        commit is only referenced once it is deployed.

        Raises:
            RootfsSysrootError: 1 an undeploy or the repo prune failed.
        """
        # Afresh: undeploy names deployments by their index, which must be the current one.
        status = await self._read_status()
        extra: list[Deployment] = []
        if status.booted is None:
            log.warning("prune keeps all deployments: booted deployment unknown")
        else:
            extra = [
                d
                for d in status.deployments
                if d.osname == self.osname and not (d.booted or d.pending or d.rollback or d.pinned)
            ]
        await self._undeploy(extra)
        # Without --refs-only every commit object counts as a root and nothing is freed;
        # deployments are refs (ostree/<bootversion>/<subbootversion>/<index>).
        text = await self._ostree(
            [f"--repo={self.repo}", "prune", "--refs-only", "--depth=0"],
            error=RootfsSysrootError,
            what=f"pruning {self.repo}",
        )
        match = _DELETED.search(text)
        deleted = int(match[1]) if match else 0
        log.info("ostree pruned", undeployed=[d.name for d in extra], deleted_objects=deleted)
        return PruneResult(undeployed=tuple(extra), deleted_objects=deleted)

    async def _undeploy(self, deployments: list[Deployment]) -> None:
        # Highest index first, so the indexes of the others do not move.
        for deployment in sorted(deployments, key=lambda d: d.index, reverse=True):
            self._changing()
            try:
                await self._ostree(
                    ["admin", "undeploy", f"--sysroot={self.sysroot}", str(deployment.index)],
                    error=RootfsSysrootError,
                    what=f"removing deployment {deployment.name} from {self.sysroot}",
                )
            finally:
                self._changing()
            log.info("ostree undeployed", deployment=deployment.name)


# A walk is of one commit in one repo directory of one mounted filesystem.
_WalkKey = tuple[str, str, int, int]


async def _walk_key(source_repo: Path, commit: str) -> _WalkKey:
    try:
        st = await asyncio.to_thread(os.stat, source_repo)
    except OSError as e:
        raise RootfsCopyError(f"cannot read {source_repo}: {e.strerror}") from e
    return str(source_repo), commit, st.st_dev, st.st_ino


# statvfs flags: read-only, no device nodes, no symlink followed (Linux 5.10; Python 3.11's
# os module does not name the last one).
_ST_NOSYMFOLLOW = 0x2000
_GUARDED = os.ST_RDONLY | os.ST_NODEV | _ST_NOSYMFOLLOW


async def _mount_flags(source_repo: Path) -> int:
    """The flags of the mount the bundle repo lies on (0 when it cannot be read: the walk
    says what is wrong with it)."""
    try:
        return (await asyncio.to_thread(os.statvfs, source_repo)).f_flag
    except OSError:
        return 0


async def _kernel_guarded(source_repo: Path) -> bool:
    """True when the bundle repo lies on a mount that is read-only, ``nodev`` and
    ``nosymfollow``: no process can follow a link on it or open a device through it."""
    return await _mount_flags(source_repo) & _GUARDED == _GUARDED


def _remove_staging(repo: Path) -> int:
    """Remove the staging directories in the repo's ``tmp`` that no ostree holds, as
    ostree's own clean-up does (it holds ``<dir>-lock`` while it writes into one, and
    would reuse one left unlocked). Returns how many were removed. Blocking."""
    tmp = repo / "tmp"
    try:
        names = [p.name for p in tmp.iterdir() if p.name.startswith("staging-")]
    except FileNotFoundError:
        return 0
    removed = 0
    for name in names:
        path = tmp / name
        if name.endswith("-lock") or path.is_symlink() or not path.is_dir():
            continue
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        lock = os.open(tmp / f"{name}-lock", flags, 0o600)
        try:
            try:
                fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # an ostree is writing into it
            shutil.rmtree(path)
            (tmp / f"{name}-lock").unlink()
            removed += 1
        finally:
            os.close(lock)
    return removed


async def _checked_listing(
    source_repo: Path, commit: str, destination: Path
) -> ostree_space.TreeListing:
    """The bundle repo's commit, checked object by object (see :mod:`aklited.rootfs.walk`).

    Raises:
        RootfsCopyError: 50 when the bundle repo lacks the commit or an object of it, or the
            drive cannot be read.
        RootfsCorruptError: 70 when an object is unsafe or does not match its name.
    """
    follow_links = not await _mount_flags(source_repo) & _ST_NOSYMFOLLOW
    try:
        return await asyncio.to_thread(
            ostree_walk.walk_missing, source_repo, commit, destination, follow_links=follow_links
        )
    except _BUNDLE_ERRORS as e:
        raise _refused(e, source_repo, commit) from e


def _in_bytes(callback: ProgressCallback | None, total_bytes: int) -> ProgressCallback | None:
    """Objects copied as bytes: the engine weighs the rootfs and the apps by their bytes."""
    if callback is None:
        return None

    def report(done: int, total: int, message: str) -> None:
        callback(total_bytes * done // max(total, 1), total_bytes, message)

    return report


def _weigh(
    progress: PullProgress,
    on_progress: ProgressCallback | None,
    estimate: SpaceEstimate,
    source_repo: Path,
) -> None:
    """Start reporting a pull's progress, in bytes, once its space check sized it."""
    progress.weigh(_in_bytes(on_progress, estimate.missing_bytes), total=estimate.missing_objects)
    progress.report(0, f"copying {estimate.missing_objects} objects from {source_repo}")


async def verify_bundle_commit(source_repo: Path, commit: str, *, boundary: Path) -> int:
    """Check every byte of ``commit`` in a bundle repo, as an install would, writing nothing.

    Returns:
        How many file objects were hashed (0: not an ``archive`` repo, checked for safety
        and presence only).

    Raises:
        RootfsCopyError, RootfsCorruptError: as :func:`_checked_listing`.
    """
    _check_commit_name(commit)
    try:
        return await asyncio.to_thread(
            ostree_content.verify_commit_content, source_repo, commit, boundary=boundary
        )
    except _BUNDLE_ERRORS as e:
        raise _refused(e, source_repo, commit) from e


_BUNDLE_ERRORS = (
    ostree_walk.MissingObjectError,
    ostree_walk.CorruptObjectError,
    drivefs.DriveEntryError,
)


def _refused(
    error: Exception, source_repo: Path, commit: str
) -> RootfsCopyError | RootfsCorruptError:
    """What the bundle-repo checks raise, as an outcome."""
    if isinstance(error, ostree_walk.MissingObjectError):
        if error.path.name == "config":
            message = f"no OSTree repo in the bundle at {source_repo} (config missing)"
        else:
            message = (
                f"the bundle repo {source_repo} is incomplete: commit {commit} needs "
                f"{error.path.relative_to(source_repo)}, which is missing"
            )
        return RootfsCopyError(message)
    if isinstance(error, drivefs.DriveIOError):
        return RootfsCopyError(f"reading the bundle failed: {error}; check the drive")
    if isinstance(error, drivefs.DriveEntryError):
        return RootfsCorruptError(f"the bundle repo is refused: {error}")
    return RootfsCorruptError(f"commit {commit} in the bundle failed verification: {error}")


# How `pull-local --untrusted` reports an object whose bytes do not match its name.
_CORRUPTED = re.compile(r"\bCorrupted\b.*\bobject\b|checksum expected", re.IGNORECASE)
# ostree's own min-free-space limit, or the filesystem itself full (dockerd loading images
# beside the pull writes to the same filesystem on LmP).
_NO_SPACE = re.compile(r"would be exceeded|No space left on device", re.IGNORECASE)


def _pull_failure(stderr: str) -> type[RootfsError] | None:
    """A pull that failed on a corrupted object is content failing verification (70), as
    ``check --deep`` says of the same drive; one that ran out of space is 60; any other
    failure stays a copy failure (50)."""
    if _CORRUPTED.search(stderr):
        return RootfsCorruptError
    return RootfsNoSpaceError if _NO_SPACE.search(stderr) else None


def _check_commit_name(commit: str) -> None:
    if not _COMMIT.match(commit):
        raise RootfsCorruptError(
            f"{commit!r} is not an OSTree commit hash (64 lowercase hex digits)"
        )


def _mib(size: int) -> str:
    return f"{size / _MIB:.1f} MiB"
