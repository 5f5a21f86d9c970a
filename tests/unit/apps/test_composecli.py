"""How ``pacman.docker_compose_bin`` is run: as aktualizr-lite reads it, a ``docker`` client
runs its compose plugin and any other binary is compose itself."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from aklited.apps.composecli import ComposeCli

# Prints the command line it was given and the environment's DOCKER_HOST and COMPOSE_FILE.
ECHO = f"""#!{sys.executable}
import json, os, sys
print(json.dumps([sys.argv[1:], os.environ.get("DOCKER_HOST"), os.environ.get("COMPOSE_FILE")]))
"""


def echo_binary(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(ECHO)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("name", "expected", "shown"),
    [
        ("docker", ["compose", "-p", "app1", "config"], "docker compose"),
        ("docker-compose", ["-p", "app1", "config"], "docker-compose"),
    ],
)
async def test_the_binary_name_decides_whether_compose_is_a_subcommand(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    expected: list[str],
    shown: str,
) -> None:
    monkeypatch.setenv("COMPOSE_FILE", "/elsewhere/docker-compose.yml")
    cli = ComposeCli(bin=echo_binary(tmp_path / "bin", name), docker_host="unix:///run/d.sock")
    done = await cli.run(["-p", "app1", "config"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [expected, "unix:///run/d.sock", None]
    assert cli.name == shown


async def test_a_link_named_docker_compose_is_compose_itself(tmp_path: Path) -> None:
    # A docker-compose link to the plugin binary: named for compose, as aktualizr-lite
    # judges it by the configured path's own name.
    plugin = echo_binary(tmp_path / "cli-plugins", "docker-compose")
    link = tmp_path / "bin" / "docker-compose"
    link.parent.mkdir()
    link.symlink_to(plugin)
    done = await ComposeCli(bin=link).run(["version"])
    assert json.loads(done.stdout)[0] == ["version"]
