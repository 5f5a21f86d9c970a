"""Shared pieces of the rootfs tests."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

import aklited_sim as sim

# Every test module here applies these: real ostree, and root for loop devices and mounts.
requirements = [
    pytest.mark.ostree,
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("ostree") is None, reason="needs the ostree command"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices"),
]


@dataclass(frozen=True, slots=True)
class BundleRepo:
    """A bundle's ``ostree_repo`` with commits made by a test."""

    repo: Path
    workdir: Path

    async def commit(
        self,
        version: str,
        *,
        files: dict[str, bytes] | None = None,
        kernel: bytes | None = None,
        random_mib: int = 0,
    ) -> str:
        """Commit a tree of ``version`` (plus ``random_mib`` files of 1 MiB random bytes)."""
        tree = await sim.make_tree(
            self.workdir / f"tree-{version}", version=version, files=files, kernel=kernel
        )
        if random_mib:
            await sim.write_random_files(
                tree / "usr" / "share" / "random", count=random_mib, size=1024 * 1024
            )
        return await sim.commit_tree(self.repo, tree, subject=f"LmP {version}", version=version)


def repo_bytes(repo: Path) -> int:
    """Disk blocks used by a repo's objects (hard-linked files counted once)."""
    seen: set[int] = set()
    total = 0
    for path in (repo / "objects").rglob("*"):
        st = path.lstat()
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total
