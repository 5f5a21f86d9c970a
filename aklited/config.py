"""Configuration: TOML snippets merged exactly as aktualizr-lite merges them.

Sources are, in order, the default locations (or every ``--config`` path instead):
``/usr/lib/sota/conf.d``, ``/var/sota/sota.toml``, ``/etc/sota/conf.d/``. Every ``*.toml``
file is collected by basename, a later source replacing an earlier file of the same name;
the files are then applied in lexicographic basename order, later keys winning. Default
sources that do not exist are skipped; a ``--config`` path that does not exist is an error.

The result is one frozen :class:`Config` with aktualizr-lite's default for every key aklited
reads, plus aklited's own ``[aklited]`` table. Unknown keys are kept in ``Config.raw`` (and
printed by ``aklite-offline config``) but otherwise ignored.
"""

from __future__ import annotations

import re
import socket
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from aklited.errors import ConfigError

DEFAULT_SOURCES: tuple[Path, ...] = (
    Path("/usr/lib/sota/conf.d"),
    Path("/var/sota/sota.toml"),
    Path("/etc/sota/conf.d/"),
)

# aklited reads a config file only to learn a handful of keys; a multi-megabyte file on
# a device is a mistake worth reporting rather than parsing.
MAX_CONFIG_FILE_BYTES = 1024 * 1024

DEVICE_TYPES = ("ci", "prod")
PACMAN_TYPES = ("ostree+compose_apps", "ostree")


@dataclass(frozen=True, slots=True)
class ProvisionConfig:
    hardware_id: str


@dataclass(frozen=True, slots=True)
class PacmanConfig:
    type: str
    os: str
    sysroot: Path
    booted: str
    tags: tuple[str, ...]
    # None: every app of the target; (): no app at all (aktualizr-lite's "" value).
    compose_apps: tuple[str, ...] | None
    compose_apps_root: Path
    reset_apps_root: Path
    docker_compose_bin: Path


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path
    uptane_metadata_path: Path

    @property
    def db_path(self) -> Path:
        """The state journal: one SQLite file beside aktualizr-lite's sql.db."""
        return self.path / "aklited.db"

    @property
    def current_target_path(self) -> Path:
        """aktualizr-lite's ``current-target`` file, rewritten on every finalize."""
        return self.path / "current-target"


@dataclass(frozen=True, slots=True)
class BootloaderConfig:
    reboot_sentinel_dir: Path


@dataclass(frozen=True, slots=True)
class AklitedConfig:
    device_type: str
    kernel_cmdline: Path
    media_root: Path
    auto_reboot: bool
    reboot_delay_s: int
    docker_host: str
    lock_path: Path


@dataclass(frozen=True, slots=True)
class Config:
    provision: ProvisionConfig
    pacman: PacmanConfig
    storage: StorageConfig
    bootloader: BootloaderConfig
    aklited: AklitedConfig
    # The merged TOML as read, defaults not applied; unknown keys live here.
    raw: Mapping[str, Any] = field(default_factory=dict)
    # The files that were applied, in order.
    sources: tuple[Path, ...] = ()


def _default_pacman_type() -> str:
    # aktualizr-lite manages apps only where a Docker engine and its client are installed.
    has_docker = Path("/usr/bin/dockerd").exists() and Path("/usr/bin/docker").exists()
    return PACMAN_TYPES[0] if has_docker else PACMAN_TYPES[1]


# (section, key) -> default, as aktualizr-lite (or, for [aklited], aklited) defines it.
# Callables are evaluated when the configuration is loaded.
DEFAULTS: dict[tuple[str, str], object] = {
    ("provision", "primary_ecu_hardware_id"): "",
    ("pacman", "type"): _default_pacman_type,
    # LmP's osname; aktualizr-lite reads it from the booted deployment when unset.
    ("pacman", "os"): "lmp",
    ("pacman", "sysroot"): "/",
    ("pacman", "booted"): "booted",
    ("pacman", "tags"): "",
    ("pacman", "compose_apps_root"): "/var/sota/compose-apps",
    ("pacman", "reset_apps_root"): "/var/sota/reset-apps",
    ("pacman", "docker_compose_bin"): "/usr/bin/docker",
    ("storage", "path"): "/var/sota",
    ("storage", "uptane_metadata_path"): "/usr/lib/sota/tuf",
    ("bootloader", "reboot_sentinel_dir"): "/var/run/aktualizr-session",
    ("aklited", "device_type"): "ci",
    ("aklited", "kernel_cmdline"): "/proc/cmdline",
    ("aklited", "media_root"): "/run/aklited/media",
    ("aklited", "auto_reboot"): True,
    ("aklited", "reboot_delay_s"): 5,
    ("aklited", "docker_host"): "unix:///var/run/docker.sock",
    # shared with aktualizr-lite's tools, which take the same flock
    ("aklited", "lock_path"): "/var/lock/aklite.lock",
}


def collect_files(paths: Sequence[Path], *, required: bool) -> list[Path]:
    """Return the TOML files to apply, in the order they are applied.

    Args:
        paths: files or directories, in source order.
        required: when True (``--config``), a missing path is an error.

    Raises:
        ConfigError: a required path does not exist or a directory cannot be listed.
    """
    by_name: dict[str, Path] = {}
    for source in paths:
        if source.is_dir():
            try:
                entries = sorted(p for p in source.iterdir() if p.suffix == ".toml")
            except OSError as e:
                raise ConfigError(f"{source}: cannot list directory: {e.strerror}") from e
            for entry in entries:
                if entry.is_file():
                    by_name[entry.name] = entry
        elif source.exists():
            by_name[source.name] = source
        elif required:
            raise ConfigError(f"{source}: configuration path does not exist")
    return [by_name[name] for name in sorted(by_name)]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: TOML syntax error: {e}") from e


def _merge(
    into: dict[str, Any],
    new: Mapping[str, Any],
    origin: dict[tuple[str, ...], Path],
    path: Path,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in new.items():
        here = (*prefix, key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, path, here)
        else:
            into[key] = _deep_copy(value)
            origin[here] = path


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


class _Reader:
    """Typed access to the merged tables; wrong types name the file and key."""

    def __init__(self, raw: Mapping[str, Any], origin: Mapping[tuple[str, ...], Path]) -> None:
        self._raw = raw
        self._origin = origin

    def _fail(self, section: str, key: str, expected: str, value: object) -> ConfigError:
        where = self._origin.get((section, key)) or self._origin.get((section,))
        got = type(value).__name__
        return ConfigError(f"{where}: {section}.{key}: expected {expected}, got {got} {value!r}")

    def _get(self, section: str, key: str) -> object:
        table = self._raw.get(section, {})
        if not isinstance(table, dict):
            where = self._origin.get((section,))
            raise ConfigError(f"{where}: [{section}] must be a table, got {type(table).__name__}")
        if key in table:
            return table[key]
        default = DEFAULTS[(section, key)]
        return default() if callable(default) else default

    def string(self, section: str, key: str, *, choices: Iterable[str] = ()) -> str:
        value = self._get(section, key)
        if not isinstance(value, str):
            raise self._fail(section, key, "a string", value)
        allowed = tuple(choices)
        if allowed and value not in allowed:
            raise self._fail(section, key, "one of " + ", ".join(allowed), value)
        return value

    def path(self, section: str, key: str) -> Path:
        value = self.string(section, key)
        if not value:
            raise self._fail(section, key, "a non-empty path", value)
        return Path(value)

    def boolean(self, section: str, key: str) -> bool:
        value = self._get(section, key)
        # aktualizr-lite writes many booleans as strings; accept its spellings too.
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise self._fail(section, key, "a boolean", value)
        return value

    def integer(self, section: str, key: str, *, minimum: int = 0) -> int:
        value = self._get(section, key)
        if isinstance(value, str) and re.fullmatch(r"\d+", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(section, key, "an integer", value)
        if value < minimum:
            raise self._fail(section, key, f"an integer >= {minimum}", value)
        return value

    def name_list(self, section: str, key: str) -> tuple[str, ...] | None:
        """A list in aktualizr-lite's spelling: "a, b c" or a TOML array; None when unset."""
        table = self._raw.get(section, {})
        if not isinstance(table, dict) or key not in table:
            default = DEFAULTS.get((section, key))
            return None if default is None else _split_names(str(default))
        value = table[key]
        if isinstance(value, str):
            return _split_names(value)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value if v.strip())
        raise self._fail(section, key, "a string or an array of strings", value)


def _split_names(value: str) -> tuple[str, ...]:
    return tuple(part for part in re.split(r"[,\s]+", value) if part)


def load_config(paths: Sequence[Path] | None = None) -> Config:
    """Load and merge the configuration.

    Args:
        paths: the ``--config`` files/directories in order, or None for the default sources.

    Raises:
        ConfigError: a ``--config`` path is missing, a file is unreadable or not TOML, or a
            key aklited reads has a value of the wrong type. The message names the file.
    """
    files = (
        collect_files(list(paths), required=True)
        if paths
        else collect_files(list(DEFAULT_SOURCES), required=False)
    )
    raw: dict[str, Any] = {}
    origin: dict[tuple[str, ...], Path] = {}
    for path in files:
        _merge(raw, _read_toml(path), origin, path)
    return _build(raw, origin, tuple(files))


def _build(
    raw: Mapping[str, Any], origin: Mapping[tuple[str, ...], Path], files: tuple[Path, ...]
) -> Config:
    r = _Reader(raw, origin)
    hardware_id = r.string("provision", "primary_ecu_hardware_id") or socket.gethostname()
    tags = r.name_list("pacman", "tags") or ()
    pacman = PacmanConfig(
        type=r.string("pacman", "type", choices=PACMAN_TYPES),
        os=r.string("pacman", "os"),
        sysroot=r.path("pacman", "sysroot"),
        booted=r.string("pacman", "booted", choices=("booted", "staged")),
        tags=tags,
        compose_apps=r.name_list("pacman", "compose_apps"),
        compose_apps_root=r.path("pacman", "compose_apps_root"),
        reset_apps_root=r.path("pacman", "reset_apps_root"),
        docker_compose_bin=r.path("pacman", "docker_compose_bin"),
    )
    return Config(
        provision=ProvisionConfig(hardware_id=hardware_id),
        pacman=pacman,
        storage=StorageConfig(
            path=r.path("storage", "path"),
            uptane_metadata_path=r.path("storage", "uptane_metadata_path"),
        ),
        bootloader=BootloaderConfig(
            reboot_sentinel_dir=r.path("bootloader", "reboot_sentinel_dir"),
        ),
        aklited=AklitedConfig(
            device_type=r.string("aklited", "device_type", choices=DEVICE_TYPES),
            kernel_cmdline=r.path("aklited", "kernel_cmdline"),
            media_root=r.path("aklited", "media_root"),
            auto_reboot=r.boolean("aklited", "auto_reboot"),
            reboot_delay_s=r.integer("aklited", "reboot_delay_s"),
            docker_host=r.string("aklited", "docker_host"),
            lock_path=r.path("aklited", "lock_path"),
        ),
        raw=_deep_copy(dict(raw)),
        sources=files,
    )


def effective_toml(config: Config) -> dict[str, Any]:
    """The merged configuration with every default aklited applies filled in.

    Its values are tomllib's types only (paths as the strings that were read, not ``Path``),
    so :func:`dumps_toml` prints it and tomllib reads that back equal.
    """
    merged: dict[str, Any] = _deep_copy(dict(config.raw))
    resolved: dict[tuple[str, str], object] = {
        ("provision", "primary_ecu_hardware_id"): config.provision.hardware_id,
        ("pacman", "type"): config.pacman.type,
        ("pacman", "tags"): ",".join(config.pacman.tags),
    }
    for (section, key), default in DEFAULTS.items():
        table = merged.setdefault(section, {})
        if key not in table:
            value = resolved.get((section, key), default)
            table[key] = value() if callable(value) else value
    return merged


def dumps_toml(data: Mapping[str, Any]) -> str:
    """``data`` as TOML that tomllib reads back equal, every table's keys in sorted order.

    Sorted, so that two devices' ``aklite-offline config`` compare with diff whichever file
    set a key first.

    Raises:
        TypeError: a value is not one of tomllib's types.
    """
    return tomli_w.dumps(_sorted_tables(data))


def _sorted_tables(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _sorted_tables(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted_tables(item) for item in value]
    return value
