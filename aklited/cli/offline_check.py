"""``aklite-offline check -s DIR``: what would an install do? Changes nothing on the device.

The engine's ``check`` verifies the metadata exactly as an install would, against a
read-only journal; ``--deep`` also verifies every byte an install would. This module only
words the result.
"""

from __future__ import annotations

from pathlib import Path

from aklited.config import Config
from aklited.engine.model import CheckResult, InstalledTarget, Target
from aklited.errors import AkliteError
from aklited.outcomes import StatusCode
from aklited.wiring import build_engine


async def check(config: Config, src_dir: Path, *, deep: bool = False) -> int:
    """Verify the bundle in ``src_dir`` and report the target an install would choose.

    Prints the chosen target and the reason on stdout; one error line on stderr.

    Returns:
        16 a newer target is installable, 0 the device already runs the bundle's target,
        else the failure's code (4, 6, 8, 11, 12, 14, 15, 20, 102; with ``deep`` also 50
        and 70 for the content, as an install would answer).
    """
    from aklited.cli.offline import print_error  # noqa: PLC0415 - the CLI imports this module

    try:
        # With the apps: whether the device already runs the target depends on them too.
        async with build_engine(config, readonly=True) as engine:
            result = await engine.check(src_dir, deep=deep)
    except AkliteError as e:
        print_error(e)
        return int(e.code)
    _print(result)
    return int(result.code)


def _print(result: CheckResult) -> None:
    if result.stored_metadata_used:
        print("Note: the bundle's metadata is older than the device's; stored metadata used")
    target = result.target
    print(f"Target: {target.name}")
    print(f"Version: {target.version}")
    print(f"OSTree commit: {target.ostree_commit}")
    apps = ", ".join(f"{name} ({uri})" for name, uri in sorted(target.apps.items()))
    print(f"Apps: {apps or 'none'}")
    print(f"Content: {_content(result)}")
    if result.code == StatusCode.OK:
        print(f"Status: the device already runs {target.name}; nothing to install")
    else:
        print(f"Status: {_reason(target, result.current)}")


def _content(result: CheckResult) -> str:
    report = result.content
    if report is None:
        return "not verified (metadata only; --deep verifies every byte)"
    parts = [
        f"OSTree commit verified ({report.objects} file objects hashed)"
        if report.objects
        else "OSTree commit checked (not an archive repo: objects checked, not hashed)"
    ]
    if report.apps:
        parts.append(f"{report.apps} apps verified ({report.blobs} blobs hashed)")
    return "; ".join(parts)


def _reason(target: Target, current: InstalledTarget | None) -> str:
    if current is None:
        return f"{target.name} can be installed (the device has no recorded target)"
    if current.initial:
        return f"{target.name} can be installed over the image the device was flashed with"
    if target.version > current.version:
        return (
            f"{target.name} can be installed: version {target.version} is newer than "
            f"{current.name} (version {current.version})"
        )
    return (
        f"{target.name} can be installed: it replaces {current.name} "
        f"(version {current.version}) at the same version"
    )
