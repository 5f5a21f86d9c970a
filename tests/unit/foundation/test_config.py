from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from aklited.config import (
    DEFAULT_SOURCES,
    collect_files,
    dumps_toml,
    effective_toml,
    load_config,
)
from aklited.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_aktualizr_lites(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config = load_config([empty])
    assert config.pacman.os == "lmp"
    assert config.pacman.sysroot == Path("/")
    assert config.pacman.booted == "booted"
    assert config.pacman.tags == ()
    assert config.pacman.compose_apps is None
    assert config.pacman.compose_apps_root == Path("/var/sota/compose-apps")
    assert config.pacman.reset_apps_root == Path("/var/sota/reset-apps")
    assert config.pacman.docker_compose_bin == Path("/usr/bin/docker")
    assert config.storage.path == Path("/var/sota")
    assert config.storage.db_path == Path("/var/sota/aklited.db")
    assert config.storage.uptane_metadata_path == Path("/usr/lib/sota/tuf")
    assert config.bootloader.reboot_sentinel_dir == Path("/var/run/aktualizr-session")
    assert config.aklited.device_type == "ci"
    assert config.aklited.kernel_cmdline == Path("/proc/cmdline")
    assert config.aklited.auto_reboot is True
    assert config.aklited.lock_path == Path("/var/lock/aklite.lock")
    # an empty hardware id falls back to the host name, as aktualizr-lite does
    assert config.provision.hardware_id


def test_later_source_replaces_same_basename(tmp_path: Path) -> None:
    usr = write(
        tmp_path / "usr/40-hardware-id.toml", '[provision]\nprimary_ecu_hardware_id = "a"\n'
    )
    var = write(tmp_path / "var/sota.toml", '[pacman]\ntags = "t1"\n')
    etc = write(tmp_path / "etc/40-hardware-id.toml", '[pacman]\nos = "other"\n')
    files = collect_files([usr.parent, var, etc.parent], required=True)
    # the /etc file of the same name replaces the /usr one entirely
    assert files == [etc, var]
    config = load_config([usr.parent, var, etc.parent])
    assert config.pacman.os == "other"
    assert config.pacman.tags == ("t1",)
    assert config.provision.hardware_id != "a"


def test_files_apply_in_lexicographic_basename_order(tmp_path: Path) -> None:
    # z-... in the first source still wins over sota.toml in a later source
    write(tmp_path / "a/z-50-fioctl.toml", '[pacman]\ntags = "from-z"\n')
    write(tmp_path / "b/sota.toml", '[pacman]\ntags = "from-sota"\nos = "sota-os"\n')
    write(tmp_path / "b/10-first.toml", '[pacman]\nos = "first-os"\n')
    config = load_config([tmp_path / "a", tmp_path / "b"])
    assert config.pacman.tags == ("from-z",)
    assert config.pacman.os == "sota-os"
    assert [p.name for p in config.sources] == ["10-first.toml", "sota.toml", "z-50-fioctl.toml"]


def test_config_file_and_dir_repeated(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    write(d / "10-a.toml", '[provision]\nprimary_ecu_hardware_id = "hw-a"\n')
    write(d / "not-toml.txt", "this is ignored = [")
    f = write(tmp_path / "single/90-b.toml", '[pacman]\ncompose_apps = "app1, app2"\n')
    config = load_config([d, f])
    assert config.provision.hardware_id == "hw-a"
    assert config.pacman.compose_apps == ("app1", "app2")


def test_tables_merge_key_by_key(tmp_path: Path) -> None:
    write(tmp_path / "c/10.toml", '[pacman]\nos = "lmp"\ntags = "a"\n')
    write(tmp_path / "c/20.toml", '[pacman]\ntags = "b c"\n')
    config = load_config([tmp_path / "c"])
    assert config.pacman.os == "lmp"
    assert config.pacman.tags == ("b", "c")


def test_empty_compose_apps_means_none(tmp_path: Path) -> None:
    write(tmp_path / "c/10.toml", '[pacman]\ncompose_apps = ""\n')
    assert load_config([tmp_path / "c"]).pacman.compose_apps == ()


def test_missing_config_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: configuration path does not exist"):
        load_config([tmp_path / "missing.toml"])


def test_missing_default_sources_are_skipped(tmp_path: Path) -> None:
    assert collect_files([tmp_path / "nope", tmp_path / "nope.toml"], required=False) == []
    assert Path("/etc/sota/conf.d/") in DEFAULT_SOURCES


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "c/20-bad.toml", '[pacman]\nos = "lmp"\ntags = [\n')
    with pytest.raises(ConfigError) as err:
        load_config([tmp_path / "c"])
    assert str(bad) in str(err.value)
    assert "TOML syntax error" in str(err.value)
    assert "line" in str(err.value) or "end of document" in str(err.value)


def test_not_utf8_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "c/10.toml"
    bad.parent.mkdir()
    bad.write_bytes(b'[pacman]\nos = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config([bad])


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    # Root reads any mode bits, so provoke a read error instead: reading /proc/self/mem
    # at offset 0 fails with EIO, as a failing medium would.
    d = tmp_path / "c"
    d.mkdir()
    (d / "10-broken.toml").symlink_to("/proc/self/mem")
    with pytest.raises(ConfigError, match=r"10-broken\.toml: cannot read"):
        load_config([d])


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("[pacman]\nos = 3\n", "pacman.os"),
        ("[pacman]\ntags = 3\n", "pacman.tags"),
        ('[pacman]\ntype = "rpm"\n', "pacman.type"),
        ('[aklited]\nauto_reboot = "maybe"\n', "aklited.auto_reboot"),
        ('[aklited]\nreboot_delay_s = "soon"\n', "aklited.reboot_delay_s"),
        ('[aklited]\ndevice_type = "qa"\n', "aklited.device_type"),
        ('[storage]\npath = ""\n', "storage.path"),
        ('pacman = "flat"\n', "[pacman]"),
    ],
)
def test_wrong_type_names_file_and_key(tmp_path: Path, snippet: str, key: str) -> None:
    write(tmp_path / "c/10-ok.toml", '[provision]\nprimary_ecu_hardware_id = "x"\n')
    bad = write(tmp_path / "c/50-bad.toml", snippet)
    with pytest.raises(ConfigError) as err:
        load_config([tmp_path / "c"])
    assert str(bad) in str(err.value)
    assert key in str(err.value)


def test_unknown_keys_are_kept(tmp_path: Path) -> None:
    write(tmp_path / "c/10.toml", '[tls]\nserver = "https://x"\n[pacman]\nfuture_key = 7\n')
    config = load_config([tmp_path / "c"])
    assert config.raw["tls"]["server"] == "https://x"
    assert config.raw["pacman"]["future_key"] == 7
    printed = tomllib.loads(dumps_toml(effective_toml(config)))
    assert printed["tls"]["server"] == "https://x"
    assert printed["pacman"]["future_key"] == 7


def test_effective_toml_round_trips(tmp_path: Path) -> None:
    write(
        tmp_path / "c/10.toml",
        '[pacman]\ntags = "a,b"\n[pacman.extra]\nlist = [1, "x\\ny", {k = "v"}]\n'
        '["odd key"]\n"quoted.key" = true\n',
    )
    config = load_config([tmp_path / "c"])
    printed = tomllib.loads(dumps_toml(effective_toml(config)))
    assert printed["pacman"]["extra"]["list"] == [1, "x\ny", {"k": "v"}]
    assert printed["odd key"]["quoted.key"] is True
    assert printed["pacman"]["tags"] == "a,b"
    assert printed["aklited"]["reboot_delay_s"] == 5
    assert printed["storage"]["path"] == "/var/sota"


# Strings TOML must escape, and every other type tomllib reads: `config` prints them all.
TRICKY_TOML = r"""
[provision]
primary_ecu_hardware_id = "imx8 \"rev B\""

[pacman]
type = "ostree"
tags = "main \"x\" \\ ü"
os = "line one\nline\ttwo \u0007 \u007f end"
sysroot = '/mnt/my sysroot/C:\dir'
compose_apps = ["app \"one\"", 'back\slash', "日本語"]

[aklited]
media_root = "/run/aklited/media with spaces/ü"
reboot_delay_s = 0

["tåble with space"]
"key.with.dots" = "v"
"" = "empty key"
"ключ" = -0.5
big = 9223372036854775807
inf = inf
when = 1979-05-27T07:32:00Z
local = 1979-05-27T07:32:00.999999
day = 1979-05-27
at = 07:32:00
empty = {}
mixed = [1, "x\\y", {k = "v \"q\""}, [true, 1.5]]

[["tåble with space".servers]]
name = "a\tb"

[["tåble with space".servers]]
name = "c"
"""


def test_config_output_reads_back_equal(tmp_path: Path) -> None:
    write(tmp_path / "c/10.toml", TRICKY_TOML)
    config = load_config([tmp_path / "c"])
    effective = effective_toml(config)
    printed = dumps_toml(effective)
    assert tomllib.loads(printed) == effective
    read = tomllib.loads(printed)
    assert read["pacman"]["tags"] == 'main "x" \\ ü'
    assert read["pacman"]["os"] == "line one\nline\ttwo \x07 \x7f end"
    assert read["pacman"]["sysroot"] == "/mnt/my sysroot/C:\\dir"
    assert read["aklited"]["media_root"] == "/run/aklited/media with spaces/ü"
    assert read["tåble with space"][""] == "empty key"
    # every table's keys sorted, whichever file set them first
    assert list(read) == sorted(read)
    assert list(read["aklited"]) == sorted(read["aklited"])


def test_effective_toml_holds_only_toml_types(tmp_path: Path) -> None:
    # the defaults aklited applies are paths in Config, but strings in what `config` prints
    empty = tmp_path / "empty"
    empty.mkdir()
    effective = effective_toml(load_config([empty]))

    def leaves(value: object) -> list[object]:
        if isinstance(value, dict):
            return [leaf for v in value.values() for leaf in leaves(v)]
        return [value]

    assert {type(leaf) for leaf in leaves(effective)} <= {str, bool, int}
    assert tomllib.loads(dumps_toml(effective)) == effective


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aklited.cli.offline", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_config_prints_merged_toml(tmp_path: Path) -> None:
    write(tmp_path / "c/40-hardware-id.toml", '[provision]\nprimary_ecu_hardware_id = "imx8"\n')
    write(tmp_path / "c/sota.toml", '[pacman]\ntags = "main"\n')
    result = run_cli("config", "--config", str(tmp_path / "c"))
    assert result.returncode == 0, result.stderr
    printed = tomllib.loads(result.stdout)
    assert printed["provision"]["primary_ecu_hardware_id"] == "imx8"
    assert printed["pacman"]["tags"] == "main"


def test_cli_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    write(tmp_path / "c/10.toml", TRICKY_TOML)
    # TOML is UTF-8 text whatever the locale; pin the child's stdout to it
    result = subprocess.run(
        [sys.executable, "-m", "aklited.cli.offline", "-c", str(tmp_path / "c"), "config"],
        capture_output=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    effective = effective_toml(load_config([tmp_path / "c"]))
    assert result.stdout == dumps_toml(effective)
    assert tomllib.loads(result.stdout) == effective


def test_cli_bad_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = write(tmp_path / "c/10.toml", "[pacman\n")
    result = run_cli("--config", str(tmp_path / "c"), "config")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0]
    assert result.stdout == ""


def test_cli_missing_config_path_exit_1(tmp_path: Path) -> None:
    result = run_cli("config", "-c", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "nowhere" in result.stderr
    assert "does not exist" in result.stderr


def test_cli_help_explains_exit_codes() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "100" in result.stdout
    assert "reboot" in result.stdout
    for command in ("check", "install", "run", "current", "config"):
        assert command in result.stdout


def test_cli_log_level_range() -> None:
    result = run_cli("--log-level", "9", "config")
    assert result.returncode == 2
    assert "log-level" in result.stderr
