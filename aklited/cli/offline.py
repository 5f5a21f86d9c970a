"""``aklite-offline``: the drop-in command line for offline updates.

Exit codes are aktualizr-lite's (see ``aklited.outcomes.StatusCode``); every failure prints
one line on stderr saying what went wrong and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from aklited.cli.options import common_options
from aklited.config import Config, dumps_toml, effective_toml, load_config
from aklited.errors import AkliteError, InternalError, PendingInstallError
from aklited.log import AKLITE_LOG_LEVELS, configure_logging
from aklited.outcomes import StatusCode

if TYPE_CHECKING:
    from aklited.engine.model import Outcome

PROG = "aklite-offline"

DESCRIPTION = """\
Apply an offline update (made by `fioctl targets offline-update`) from a directory,
usually a mounted USB drive.

Typical use:
  aklite-offline check   -s /mnt/usb/update     # what would be installed, changes nothing
  aklite-offline install -s /mnt/usb/update     # then act on the exit code:
      100  reboot, then run `aklite-offline run`
      101  restart dockerd (systemctl restart docker), then run `aklite-offline run`
        0  the device already runs this target
  aklite-offline run                            # after the reboot/restart: finish the update
"""

# The exit codes from the one table they live in (StatusCode), never a copy of it.
EPILOG = (
    "Configuration: without --config, *.toml files are read from /usr/lib/sota/conf.d,\n"
    "/var/sota/sota.toml and /etc/sota/conf.d/ (as aktualizr-lite does).\n\nExit codes:\n"
    + "\n".join(f"  {int(code):3d}  {code.meaning}" for code in StatusCode)
    + "\n"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options(top_level=True)],
    )
    common = common_options(top_level=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        parents=[common],
        help="verify a bundle and tell what it would install (changes nothing)",
        description="Verify the bundle's TUF metadata and choose the target it would install. "
        "Exit 16 when a newer target is installable, 0 when the device already runs it.",
    )
    check.add_argument("-s", "--src-dir", type=Path, required=True, help="the bundle directory")
    check.add_argument(
        "--deep",
        action="store_true",
        help="also verify every byte an install would: the OSTree commit object by object, "
        "every app blob, manifest and archive (slower; reads the whole bundle)",
    )

    install = sub.add_parser(
        "install",
        parents=[common],
        help="install the bundle's target (exit 100: reboot; 101: restart dockerd; then run)",
        description="Verify the bundle, copy the rootfs and apps onto the device and deploy "
        "them. The drive can be removed when the command has finished.",
    )
    install.add_argument("-s", "--src-dir", type=Path, required=True, help="the bundle directory")
    install.add_argument(
        "-f", "--force", action="store_true", help="allow installing an older target"
    )
    install.add_argument(
        "-t", "--target", default="", metavar="NAME", help="install this target, not the newest"
    )

    sub.add_parser(
        "run",
        parents=[common],
        help="finish a pending install after the reboot or dockerd restart",
        description="Finalize the pending install: check the booted rootfs and start the apps.",
    )
    sub.add_parser(
        "current",
        parents=[common],
        help="show the target the device runs: name, version, OSTree hash, apps",
    )
    sub.add_parser(
        "config",
        parents=[common],
        help="print the effective configuration (all sources merged) as TOML",
    )
    return parser


# What the user does next, after the engine's own words: this front end's wording.
NEXT_STEP = {
    StatusCode.NEEDS_REBOOT: "reboot, then run 'aklite-offline run'",
    StatusCode.NEEDS_DOCKER_RESTART: "restart dockerd, then run 'aklite-offline run'",
}


def print_error(err: AkliteError) -> None:
    """The one line a failure prints on stderr."""
    message = err.message
    if isinstance(err, PendingInstallError):
        message += ": reboot and run 'aklite-offline run' first"
    suffix = (
        "" if err.code == StatusCode.UNKNOWN_ERROR else f" [{int(err.code)}: {err.code.meaning}]"
    )
    print(f"{PROG}: error: {message}{suffix}", file=sys.stderr)


async def _cmd_config(config: Config, _args: argparse.Namespace) -> int:
    sys.stdout.write(dumps_toml(effective_toml(config)))
    return StatusCode.OK


async def _cmd_check(config: Config, args: argparse.Namespace) -> int:
    from aklited.cli.offline_check import check  # noqa: PLC0415 - heavy imports only when used

    return await check(config, args.src_dir, deep=args.deep)


def _report(outcome: Outcome) -> int:
    stream = sys.stdout if outcome.code.is_success else sys.stderr
    prefix = "" if outcome.code.is_success else f"{PROG}: "
    step = NEXT_STEP.get(outcome.code)
    message = f"{outcome.message}: {step}" if step else outcome.message
    print(f"{prefix}{message} [{int(outcome.code)}]", file=stream)
    return int(outcome.code)


async def _cmd_install(config: Config, args: argparse.Namespace) -> int:
    from aklited.wiring import build_engine  # noqa: PLC0415

    async with build_engine(config) as engine:
        outcome = await engine.install(args.src_dir, target_name=args.target, force=args.force)
    return _report(outcome)


async def _cmd_run(config: Config, _args: argparse.Namespace) -> int:
    from aklited.wiring import build_engine  # noqa: PLC0415

    async with build_engine(config) as engine:
        outcome = await engine.run()
    return _report(outcome)


async def _cmd_current(config: Config, _args: argparse.Namespace) -> int:
    from aklited.wiring import build_engine  # noqa: PLC0415

    # Reads only: no system bus, no lock, the journal opened read-only.
    async with build_engine(config, readonly=True) as engine:
        info = await engine.current()
    print(f"Target: {info.name}")
    print(f"Version: {info.version}")
    print(f"Ostree hash: {info.ostree_commit or 'unknown'}")
    if info.booted_commit and info.booted_commit != info.ostree_commit:
        print(f"Booted commit: {info.booted_commit}")
    print("Apps:" + ("" if info.apps else " none"))
    for name, uri in sorted(info.apps.items()):
        print(f"    {name}: {info.app_states.get(name, 'unknown')} ({uri})")
    return StatusCode.OK


Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]

COMMANDS: dict[str, Command] = {
    "check": _cmd_check,
    "install": _cmd_install,
    "run": _cmd_run,
    "current": _cmd_current,
    "config": _cmd_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(target="console", level=AKLITE_LOG_LEVELS[args.log_level])
    log = structlog.get_logger(PROG)
    try:
        config = load_config(args.config or None)
        return asyncio.run(COMMANDS[args.command](config, args))
    except AkliteError as e:
        print_error(e)
        return int(e.code)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # The traceback is for developers (--log-level 0); a user gets one line.
        log.debug("unexpected failure", exc_info=e)
        print_error(InternalError.wrap(e))
        return StatusCode.UNKNOWN_ERROR


if __name__ == "__main__":
    sys.exit(main())
