"""What a failed ``ostree pull-local`` said decides its outcome: 70 for content that does not
verify, 60 for a full filesystem (ostree's own free-space limit, or ENOSPC: dockerd loads
images beside the pull on the same filesystem), 50 for anything else."""

from __future__ import annotations

import pytest

from aklited.errors import RootfsCorruptError, RootfsError, RootfsNoSpaceError
from aklited.rootfs.sysroot import _pull_failure

CASES: list[tuple[str, type[RootfsError] | None]] = [
    (
        "error: Corrupted file object; checksum expected='ab12' actual='cd34'",
        RootfsCorruptError,
    ),
    (
        "error: Writing content object: min-free-space-percent '3%' would be exceeded, "
        "at least 13.6 MB requested",
        RootfsNoSpaceError,
    ),
    (
        "error: min-free-space-size 500MB would be exceeded, at least 1.2 MB requested",
        RootfsNoSpaceError,
    ),
    ("error: Writing content object: fallocate: No space left on device", RootfsNoSpaceError),
    ("error: opendir(objects/ab): Input/output error", None),
]


IDS = ["corrupt", "percent", "size", "enospc", "io"]


@pytest.mark.parametrize(("stderr", "kind"), CASES, ids=IDS)
def test_a_failed_pull_is_told_by_what_ostree_said(
    stderr: str, kind: type[RootfsError] | None
) -> None:
    assert _pull_failure(stderr) is kind
