#!/usr/bin/env python3
"""Write the manual pages in packaging/man from the programs' argument parsers.

    .venv/bin/python scripts/manpages.py [--output DIR]        # or: make man

argparse-manpage renders each parser: synopsis, description, commands and options. What
argparse does not know is built here from the code that defines it: the exit status table
from ``aklited.outcomes.StatusCode``, the configuration keys and their defaults from
``aklited.config.DEFAULTS``, the files from the configuration's defaults, the D-Bus names
from ``aklited.daemon.service`` and the interface's members from packaging/dbus. The pages
are committed, so a device build installs them without Python tooling;
tests/unit/packaging/test_manpages.py fails while they differ from what this script writes.

A page keeps the date in its header while its text is unchanged: running the script again
rewrites only the pages whose text changed, dated today (or SOURCE_DATE_EPOCH).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from argparse_manpage.manpage import Manpage  # type: ignore[import-untyped]

from aklite_bundle import cli as bundle_cli
from aklited.cli import ctl, offline
from aklited.config import (
    DEFAULT_SOURCES,
    DEFAULTS,
    DEVICE_TYPES,
    PACMAN_TYPES,
    StorageConfig,
    dumps_toml,
)
from aklited.daemon import runner
from aklited.daemon.service import BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH
from aklited.outcomes import StatusCode

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "packaging/man"
UNIT = REPO / "packaging/systemd/aklited.service"
DBUS_XML = REPO / "packaging/dbus" / f"{INTERFACE}.xml"
DEVICE = REPO / "pyproject.toml"
WORKSTATION = REPO / "aklite_bundle/pyproject.toml"

# argparse wraps usage and help to the terminal's width: one width makes the pages the same
# wherever they are generated. groff refills help text but keeps a usage line's breaks, so
# the width is one at which a command's usage fits inside man's indent on an 80-column
# terminal.
COLUMNS = "66"
MANUALS = {1: "User Commands", 8: "System Administration"}
# Replaced in the .TH line once the rest of the page is known (see write_pages).
DATE_PLACEHOLDER = "@DATE@"
TH_DATE = re.compile(r'^\.TH \S+ "[^"]*" "([^"]*)"')

# Exit codes that are no update's outcome, so not in StatusCode.
USAGE_ERROR = 2  # argparse's, for an invalid command line
INTERRUPTED = 130  # the shell's 128 + SIGINT, returned on Ctrl-C

# What each configuration key means. aklited/config.py's DEFAULTS names the keys and their
# defaults; a key there without a line here stops this script, so no key goes undocumented.
KEYS: dict[tuple[str, str], str] = {
    ("provision", "primary_ecu_hardware_id"): "the hardware id a target must be for; "
    "empty: the host name",
    ("pacman", "type"): f"{PACMAN_TYPES[0]} (the rootfs and Compose Apps) or {PACMAN_TYPES[1]} "
    f"(the rootfs only); default: {PACMAN_TYPES[0]} when /usr/bin/dockerd and "
    f"/usr/bin/docker exist, else {PACMAN_TYPES[1]}",
    ("pacman", "os"): "the OSTree stateroot (osname) an update deploys",
    ("pacman", "sysroot"): "the OSTree sysroot: the directory holding ostree/ and boot/",
    ("pacman", "booted"): "booted or staged, as aktualizr-lite reads it",
    ("pacman", "tags"): 'the tags a target must carry: "a,b" or an array; empty: any',
    ("pacman", "compose_apps"): 'the apps to install: "a,b" or an array; unset: every app '
    'of the target; "": none',
    ("pacman", "compose_apps_root"): "where Compose App projects are installed",
    ("pacman", "reset_apps_root"): "the device's app store",
    ("pacman", "docker_compose_bin"): "the docker client, run as docker compose; a binary of "
    "another name (docker-compose) is run as compose itself",
    ("storage", "path"): "aktualizr-lite's storage directory; aklited's journal is there",
    ("storage", "uptane_metadata_path"): "pre-provisioned TUF roots, in ci/ and prod/",
    ("bootloader", "reboot_sentinel_dir"): "where the reboot marker is written",
    ("aklited", "device_type"): f"{' or '.join(DEVICE_TYPES)}: which roots and bundles the "
    "device accepts",
    ("aklited", "kernel_cmdline"): "where the booted deployment (ostree=) is read from",
    ("aklited", "media_root"): "where the daemon mounts drives (read-only, nosuid, nodev, "
    "noexec, and nosymfollow where the kernel can)",
    ("aklited", "auto_reboot"): "whether the daemon reboots when an install needs it",
    ("aklited", "reboot_delay_s"): "seconds between the end of an install and that reboot",
    ("aklited", "docker_host"): "the Docker engine's API socket",
    ("aklited", "lock_path"): "the lock an update holds, shared with aktualizr-lite's tools",
}
# Keys read without a default: unset and empty mean different things.
NO_DEFAULT = frozenset({("pacman", "compose_apps")})


@dataclass(frozen=True)
class Page:
    prog: str
    section: int
    summary: str  # the NAME line, after "prog - "
    package: Path  # the pyproject.toml whose name and version the page footer shows
    parser: Callable[[], argparse.ArgumentParser]
    # Sections after the options, (heading, roff), in the order man-pages(7) gives.
    sections: Callable[[], list[tuple[str, str]]]

    @property
    def filename(self) -> str:
        return f"{self.prog}.{self.section}"


# Paths, keys and D-Bus names: words that a hyphen would make wrong to copy.
NAMES = re.compile(r"(?<!\S)(?=\S*(?:/|_|\w\.\w))")


def roff(text: str) -> str:
    """Plain text as roff: backslashes and minus signs escaped, no line read as a request,
    no path or name hyphenated."""
    text = NAMES.sub(r"\\%", text.replace("\\", "\\e").replace("-", "\\-"))
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


def paragraphs(text: str) -> str:
    """A description as argparse prints it: indented lines (examples) stay as they are,
    the other lines are filled; a blank line starts a paragraph."""
    out: list[str] = []
    for block in re.split(r"\n[ \t]*\n", text.strip("\n")):
        if out:
            out.append(".PP")
        literal = False
        for line in block.split("\n"):
            indented = line.startswith((" ", "\t"))
            if indented != literal:
                out.append(".nf" if indented else ".fi")
                literal = indented
            out.append(roff(line.rstrip()))
        if literal:
            out.append(".fi")
    return "\n".join(out)


def tagged(items: Iterable[tuple[str, str]]) -> str:
    """A list of (tag in roff, text) as .TP paragraphs."""
    return "\n".join(f".TP\n{tag}\n{roff(text)}" for tag, text in items)


def bold(text: str) -> str:
    return f"\\fB{roff(text)}\\fR"


def see_also(*pages: str) -> tuple[str, str]:
    """SEE ALSO: ``name(section)`` references, comma separated."""
    refs = [page.removesuffix(")").partition("(") for page in pages]
    lines = [f".BR {roff(name)} ({section})," for name, _, section in refs]
    lines[-1] = lines[-1].removesuffix(",")
    return "SEE ALSO", "\n".join(lines)


def listed(items: Iterable[object]) -> str:
    words = [str(item) for item in items]
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def exit_codes(intro: str, extra: dict[int, str]) -> tuple[str, str]:
    """The EXIT STATUS section: every StatusCode with its meaning, and ``extra``."""
    rows = {int(code): code.meaning for code in StatusCode}
    clash = rows.keys() & extra.keys()
    if clash:
        raise SystemExit(f"manpages: exit codes {sorted(clash)} are now StatusCode values")
    rows |= extra
    return "EXIT STATUS", roff(intro) + "\n" + tagged(
        (bold(str(number)), rows[number]) for number in sorted(rows)
    )


def success_codes() -> str:
    return listed(int(code) for code in StatusCode if code.is_success)


def _default(section: str, key: str) -> str:
    return str(DEFAULTS[(section, key)])


def configuration() -> tuple[str, str]:
    """The CONFIGURATION section: how the sources merge, then every key aklited reads."""
    undocumented = DEFAULTS.keys() - KEYS.keys()
    unknown = KEYS.keys() - DEFAULTS.keys() - NO_DEFAULT
    if undocumented or unknown:
        raise SystemExit(
            f"manpages: describe every key of aklited.config.DEFAULTS in KEYS "
            f"(undocumented: {sorted(undocumented)}; not in DEFAULTS: {sorted(unknown)})"
        )
    sources = listed(str(path) for path in DEFAULT_SOURCES)
    lines = [
        roff(
            f"Configuration is read as aktualizr-lite reads it. Without --config, every *.toml "
            f"file in {sources} is collected by its name (a later source replaces an earlier "
            "file of the same name), then the files are applied in the lexicographic order of "
            "their names, later keys winning. --config, repeatable, names the files or "
            "directories to read instead. A value of the wrong type stops the command with one "
            "line naming the file and the key; unknown keys are kept and ignored. "
        )
        + bold("aklite-offline config")
        + roff(" prints the merged configuration with every default filled in."),
        ".PP",
        roff("The keys aklited reads, with their defaults:"),
    ]
    table = ""
    for (section, key), meaning in KEYS.items():
        if section != table:
            table = section
            lines.append(f".SS [{roff(section)}]")
        default = DEFAULTS.get((section, key))
        if default is None or callable(default):
            tag = bold(key)
        else:
            tag = bold(key) + roff(" = " + dumps_toml({key: default}).strip().partition(" = ")[2])
        lines.append(tagged([(tag, meaning)]))
    return "CONFIGURATION", "\n".join(lines)


def files(*, daemon: bool) -> tuple[str, str]:
    """The FILES section, from the configuration's default sources and paths."""
    storage = StorageConfig(
        path=Path(_default("storage", "path")),
        uptane_metadata_path=Path(_default("storage", "uptane_metadata_path")),
    )
    items = [
        (
            bold(str(source)),
            "a configuration file" if source.suffix == ".toml" else "*.toml configuration files",
        )
        for source in DEFAULT_SOURCES
    ]
    items += [
        (
            bold(str(storage.db_path)),
            "the state journal (SQLite): installs, their events and the trusted TUF metadata "
            "(storage.path)",
        ),
        (
            bold(str(storage.current_target_path)),
            "aktualizr-lite's record of the target the device runs, rewritten when an update "
            "is finalized (storage.path)",
        ),
    ]
    items += [
        (
            bold(f"{storage.uptane_metadata_path / device_type}/"),
            f"the pre-provisioned TUF roots (N.root.json) of a {device_type} device "
            "(storage.uptane_metadata_path, aklited.device_type)",
        )
        for device_type in DEVICE_TYPES
    ]
    items.append(
        (bold(_default("aklited", "lock_path")), "the lock an update holds (aklited.lock_path)")
    )
    if daemon:
        items.append(
            (
                bold(_default("aklited", "media_root")),
                "mount points of drives, in the daemon's own mount namespace (aklited.media_root)",
            )
        )
    intro = roff("Default paths; the configuration key in parentheses moves a path.")
    return "FILES", intro + "\n" + tagged(items)


def _dbus_members() -> list[tuple[str, str, str]]:
    """(kind, signature line, comment) of each member of the shipped introspection file."""
    # The repository's own interface description, not input from a device; comments kept,
    # they document the members.
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True))  # noqa: S314
    root = ET.parse(DBUS_XML, parser).getroot()  # noqa: S314
    interface = root.find(f"interface[@name='{INTERFACE}']")
    if interface is None:
        raise SystemExit(f"manpages: {DBUS_XML} does not describe {INTERFACE}")
    members: list[tuple[str, str, str]] = []
    comment = ""
    for element in interface:
        if callable(element.tag):  # ET.Comment: the text describes the next member
            comment = " ".join((element.text or "").split())
            continue
        name = element.get("name", "")
        if element.tag == "property":
            line = f"{name} ({element.get('type')}, {element.get('access')})"
        else:
            args = [
                f"{'out ' if arg.get('direction') == 'out' else ''}{arg.get('type')} "
                f"{arg.get('name')}"
                for arg in element.findall("arg")
            ]
            line = f"{name}({', '.join(args)})"
        members.append((element.tag, line, re.sub(rf"^{name}:\s*", "", comment)))
        comment = ""
    return members


def dbus_interface() -> tuple[str, str]:
    lines = [
        roff("aklited owns the name ")
        + bold(BUS_NAME)
        + roff(" on the system bus and serves the interface ")
        + bold(INTERFACE)
        + roff(" at ")
        + bold(OBJECT_PATH)
        + roff(
            ". Root may call every method; other users may read the properties and receive "
            "the signals. A method that fails returns the D-Bus error "
            f"{ERROR_PREFIX}<Name> of its status code (see aklite-offline(1)), for example "
            f"{ERROR_PREFIX}VerificationFailed for "
            f"{int(StatusCode.VERIFICATION_FAILED)}. aklitectl(1) is its command line client."
        ),
    ]
    members = _dbus_members()
    for kind, title in (("method", "Methods"), ("signal", "Signals"), ("property", "Properties")):
        lines.append(f".SS {title}")
        lines.append(tagged((bold(line), text) for k, line, text in members if k == kind))
    return "D-BUS INTERFACE", "\n".join(lines)


def systemd_unit() -> tuple[str, str]:
    before = re.findall(r"^Before=(.+)$", UNIT.read_text(), flags=re.MULTILINE)
    text = (
        f"systemd runs aklited as {UNIT.name}. At start the daemon finishes an update that "
        "waits for it (after the reboot or the dockerd restart) before it tells systemd it "
        "is ready"
        + (f"; the unit is ordered before {' '.join(before)}" if before else "")
        + ", so that an update is never seen half finished. "
    )
    return "SYSTEMD UNIT", (
        roff(text)
        + bold(f"systemctl status {UNIT.stem}")
        + roff(" shows what the daemon does; it logs to the journal: ")
        + bold(f"journalctl -t {runner.PROG}")
        + roff(".")
    )


def _offline_sections() -> list[tuple[str, str]]:
    return [
        exit_codes(
            "The exit status is the status code of the outcome, the numbers aktualizr-lite "
            f"uses. {success_codes()} are not failures; any other status is, and the command "
            "prints one line on standard error saying what went wrong.",
            {
                USAGE_ERROR: "the command line is invalid",
                INTERRUPTED: "interrupted (Ctrl-C)",
            },
        ),
        configuration(),
        files(daemon=False),
        see_also("aklitectl(1)", "aklited(8)", "aklite-bundle(1)"),
    ]


def _ctl_sections() -> list[tuple[str, str]]:
    return [
        exit_codes(
            "install, run and watch exit with the status code of the update they follow, "
            f"check with {int(StatusCode.UPDATE_AVAILABLE)} (a newer target is installable) "
            f"or {int(StatusCode.OK)} (the device runs it already), status with "
            f"{int(StatusCode.OK)}. A call aklited refuses exits with the status code of its "
            "D-Bus error; other failures (no system bus, aklited not running) with "
            f"{int(StatusCode.UNKNOWN_ERROR)}. {success_codes()} are not failures.",
            {
                USAGE_ERROR: "the command line is invalid",
                INTERRUPTED: "interrupted (Ctrl-C); the update goes on in aklited",
            },
        ),
        see_also("aklited(8)", "aklite-offline(1)"),
    ]


def _daemon_sections() -> list[tuple[str, str]]:
    return [
        dbus_interface(),
        systemd_unit(),
        configuration(),
        files(daemon=True),
        see_also("aklitectl(1)", "aklite-offline(1)", "aklite-bundle(1)"),
    ]


def _bundle_sections() -> list[tuple[str, str]]:
    return [
        (
            "EXIT STATUS",
            roff(
                f"{int(StatusCode.OK)} on success. A check the device would make that fails "
                "exits with the status code the device would return (for example "
                f"{int(StatusCode.SECURITY_ERROR)}: {StatusCode.SECURITY_ERROR.meaning}; see "
                f"aklite-offline(1)); other errors with {int(StatusCode.UNKNOWN_ERROR)}, an "
                f"invalid command line with {USAGE_ERROR}."
            ),
        ),
        see_also("aklite-offline(1)", "aklited(8)"),
    ]


PAGES = (
    Page(
        "aklite-offline",
        1,
        "apply an offline update from a USB drive",
        DEVICE,
        offline.build_parser,
        _offline_sections,
    ),
    Page(
        "aklitectl",
        1,
        "status and control of the aklited update daemon",
        DEVICE,
        ctl.build_parser,
        _ctl_sections,
    ),
    Page(
        "aklited",
        8,
        "offline update daemon (updates from USB drives)",
        DEVICE,
        runner.build_parser,
        _daemon_sections,
    ),
    Page(
        "aklite-bundle",
        1,
        "make, sign, inspect and verify offline update bundles",
        WORKSTATION,
        bundle_cli.build_parser,
        _bundle_sections,
    ),
)


def _source(pyproject: Path) -> str:
    """The footer's "name version" (read from the checkout: installed metadata may lag)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return f"{project['name']} {project['version']}"


def _title_commands(parser: argparse.ArgumentParser) -> None:
    # argparse files sub-commands under "positional arguments"; a man page calls them COMMANDS.
    # argparse has no public accessor for the groups; argparse-manpage reads them too.
    for group in parser._action_groups:
        if any(isinstance(a, argparse._SubParsersAction) for a in group._group_actions):
            group.title = "commands"


def render(page: Page, date: str) -> str:
    """The page's roff text, its header dated ``date``."""
    parser = page.parser()
    _title_commands(parser)
    # The description is converted here, its examples kept line by line.
    description = parser.description or ""
    parser.description = None
    # The epilog sums up exit codes and sources for --help; the page has them in full.
    parser.epilog = None
    usage = " ".join(parser.format_usage().split()[1:])  # without "usage:", on one line
    man = Manpage(parser, format="single-commands-section")
    man.section = page.section
    man.date = date
    man.source = _source(page.package)
    man.manual = MANUALS[page.section]
    man.description = page.summary
    prog, _, arguments = usage.partition(" ")
    man.add_section("synopsis", "=", f".B {roff(prog)}\n{roff(arguments)}")
    man.add_section("description", "=", paragraphs(description))
    for heading, content in page.sections():
        man.add_section(heading, "=", content)
    return str(man)


def _today() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return roff(when.strftime("%Y-%m-%d"))


def _dated(text: str, date: str) -> str:
    head, _, rest = text.partition("\n")
    return head.replace(DATE_PLACEHOLDER, date) + "\n" + rest


def write_pages(out_dir: Path) -> list[tuple[str, bool]]:
    """Write every page into ``out_dir``; return (file name, whether it was rewritten)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for page in PAGES:
        text = render(page, DATE_PLACEHOLDER)
        path = out_dir / page.filename
        old = path.read_text() if path.exists() else ""
        kept = TH_DATE.match(old)
        if kept and _dated(text, kept[1]) == old:
            done.append((page.filename, False))
            continue
        path.write_text(_dated(text, _today()))
        done.append((page.filename, True))
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the manual pages of aklited.")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT}")
    args = parser.parse_args(argv)
    # Before any parser is built: argparse reads the width when it formats.
    os.environ["COLUMNS"] = COLUMNS
    for name, written in write_pages(args.output):
        print(f"{'written' if written else 'unchanged'}: {args.output / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
