"""How ``pacman.docker_compose_bin`` is run: as aktualizr-lite reads it, a ``docker`` client
runs its compose plugin and any other binary is compose itself; the plugin the client lists
is run directly, and the client runs it whenever that cannot be done."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from aklited.apps import composecli
from aklited.apps.composecli import PLUGINS_QUERY, ComposeCli

# A program that notes each command line it is given in ./calls (and the DOCKER_HOST it
# ran with in ./hosts), answers the plugin query with ./info.out and the exit status in
# ./info.rc (first saying so into the FIFO ./info.started and sleeping as long as
# ./info.sleep says, where they exist), and otherwise prints its own name, its arguments,
# the environment's DOCKER_HOST and whichever of COMPOSE_FILE and
# DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND it has.
PROGRAM = f"""#!{sys.executable}
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
env = os.environ
with open(os.path.join(here, "calls"), "a") as calls:
    calls.write(json.dumps(sys.argv[1:]) + "\\n")
with open(os.path.join(here, "hosts"), "a") as hosts:
    hosts.write(json.dumps(env.get("DOCKER_HOST")) + "\\n")
if sys.argv[1:2] == ["info"]:
    if os.path.exists(os.path.join(here, "info.started")):  # a FIFO the test waits on
        with open(os.path.join(here, "info.started"), "w") as started:
            started.write("started")
    if os.path.exists(os.path.join(here, "info.sleep")):
        with open(os.path.join(here, "info.sleep")) as sleep:
            time.sleep(float(sleep.read()))
    with open(os.path.join(here, "info.out")) as out:
        sys.stdout.write(out.read())
    with open(os.path.join(here, "info.rc")) as rc:
        sys.exit(int(rc.read()))
name = os.path.basename(__file__)
stray = env.get("COMPOSE_FILE") or env.get("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND")
print(json.dumps([name, sys.argv[1:], env.get("DOCKER_HOST"), stray]))
"""
ARGS = ["-p", "app1", "config"]
HOST = "unix:///run/d.sock"


def program(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(PROGRAM)
    path.chmod(0o755)
    return path


def docker_client(tmp_path: Path, answer: Any, *, rc: int = 0) -> Path:
    """A ``docker`` that lists ``answer`` (JSON unless a str) as its plugins."""
    docker = program(tmp_path / "bin", "docker")
    text = answer if isinstance(answer, str) else json.dumps(answer)
    (docker.parent / "info.out").write_text(text)
    (docker.parent / "info.rc").write_text(str(rc))
    return docker


def client_naming_its_plugin(tmp_path: Path, *, answer_after_s: float | None = None) -> Path:
    """A ``docker`` that lists a working compose plugin (in ``answer_after_s``, if given)."""
    plugin = program(tmp_path / "cli-plugins", "docker-compose")
    docker = docker_client(tmp_path, [{"Name": "compose", "Path": str(plugin)}])
    if answer_after_s is not None:
        (docker.parent / "info.sleep").write_text(str(answer_after_s))
    return docker


def calls(binary: Path) -> list[list[str]]:
    log = binary.parent / "calls"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def ran(cli: ComposeCli, tmp_path: Path) -> list[Any]:
    done = await cli.run(ARGS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result: list[Any] = json.loads(done.stdout)
    return result


async def test_a_binary_not_named_docker_is_compose_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSE_FILE", "/elsewhere/docker-compose.yml")
    cli = ComposeCli(bin=program(tmp_path / "bin", "docker-compose"), docker_host=HOST)
    assert await ran(cli, tmp_path) == ["docker-compose", ARGS, HOST, None]
    assert cli.name == "docker-compose"


async def test_a_link_named_docker_compose_is_compose_itself(tmp_path: Path) -> None:
    # Judged by the configured path's own name, as aktualizr-lite judges it.
    link = tmp_path / "bin" / "docker-compose"
    link.parent.mkdir()
    link.symlink_to(program(tmp_path / "cli-plugins", "plugin"))
    assert (await ran(ComposeCli(bin=link), tmp_path))[1] == ARGS


async def test_the_plugin_the_docker_client_lists_is_run_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSE_FILE", "/elsewhere/docker-compose.yml")
    # Inherited, it would make the plugin take its arguments as the client's.
    monkeypatch.setenv("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND", "/usr/bin/docker")
    plugin = program(tmp_path / "cli-plugins", "docker-compose")
    listed = [{"Name": "buildx", "Path": "/nowhere"}, {"Name": "compose", "Path": str(plugin)}]
    docker = docker_client(tmp_path, listed)
    cli = ComposeCli(bin=docker, docker_host=HOST)
    assert cli.name == "docker compose"
    for _ in range(2):
        assert await ran(cli, tmp_path) == ["docker-compose", ARGS, HOST, None]
    # The client was asked once, of the same engine; the plugin ran both times.
    assert calls(docker) == [list(PLUGINS_QUERY)]
    assert (docker.parent / "hosts").read_text().split() == [json.dumps(HOST)]
    assert calls(plugin) == [ARGS, ARGS]


@pytest.mark.parametrize(
    ("answer", "rc"),
    [
        ("Error: unknown flag: --format", 1),
        ("template: :1:12: executing at <.ClientInfo.Plugins>: can't evaluate field", 0),
        ([{"Name": "buildx", "Path": "/usr/libexec/docker/cli-plugins/docker-buildx"}], 0),
        ([{"Name": "compose", "Path": "PLUGIN", "Err": "invalid metadata"}], 0),
        ([{"Name": "compose", "Path": "cli-plugins/docker-compose"}], 0),
        ([{"Name": "compose", "Path": "/nowhere/docker-compose"}], 0),
        ([{"Name": "compose", "Path": "NOT-EXECUTABLE"}], 0),
        ([{"Name": "compose", "Path": "DIRECTORY"}], 0),
        ({"Name": "compose"}, 0),
    ],
    ids=[
        "query-refused",
        "not-json",
        "no-compose",
        "plugin-broken",
        "relative-path",
        "missing",
        "not-executable",
        "a-directory",
        "not-a-list",
    ],
)
async def test_the_client_runs_compose_when_its_plugin_cannot_be_run_directly(
    tmp_path: Path, answer: Any, rc: int
) -> None:
    plugin = program(tmp_path / "cli-plugins", "docker-compose")
    (tmp_path / "cli-plugins" / "NOT-EXECUTABLE").write_text("data")
    places = {
        "PLUGIN": str(plugin),
        "NOT-EXECUTABLE": str(tmp_path / "cli-plugins" / "NOT-EXECUTABLE"),
        "DIRECTORY": str(tmp_path / "cli-plugins"),
    }
    if isinstance(answer, list):
        answer = [{k: places.get(v, v) for k, v in entry.items()} for entry in answer]
    docker = docker_client(tmp_path, answer, rc=rc)
    cli = ComposeCli(bin=docker, docker_host=HOST)
    for _ in range(2):
        assert await ran(cli, tmp_path) == ["docker", ["compose", *ARGS], HOST, None]
    assert calls(docker) == [list(PLUGINS_QUERY), ["compose", *ARGS], ["compose", *ARGS]]
    assert calls(plugin) == []


async def test_a_plugin_gone_once_found_is_run_by_the_client_again(tmp_path: Path) -> None:
    plugin = program(tmp_path / "cli-plugins", "docker-compose")
    docker = docker_client(tmp_path, [{"Name": "compose", "Path": str(plugin)}])
    cli = ComposeCli(bin=docker)
    assert (await ran(cli, tmp_path))[0] == "docker-compose"
    plugin.rename(tmp_path / "moved")  # an update replaced it, say
    assert (await ran(cli, tmp_path))[:2] == ["docker", ["compose", *ARGS]]
    assert (await ran(cli, tmp_path))[:2] == ["docker", ["compose", *ARGS]]
    assert calls(docker) == [list(PLUGINS_QUERY), ["compose", *ARGS], ["compose", *ARGS]]


async def test_a_missing_client_is_an_error_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        await ComposeCli(bin=tmp_path / "bin" / "docker").run(ARGS)
    with pytest.raises(OSError):
        await ComposeCli(bin=tmp_path / "bin" / "docker-compose").run(ARGS)


async def test_a_client_slow_to_answer_is_not_waited_for_and_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(composecli, "PLUGINS_QUERY_TIMEOUT_S", 0.2)
    docker = client_naming_its_plugin(tmp_path, answer_after_s=30)
    cli = ComposeCli(bin=docker)
    for _ in range(2):
        assert (await ran(cli, tmp_path))[:2] == ["docker", ["compose", *ARGS]]
    assert calls(docker) == [list(PLUGINS_QUERY), ["compose", *ARGS], ["compose", *ARGS]]


async def test_the_lookup_counts_against_the_commands_own_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(composecli, "PLUGINS_QUERY_TIMEOUT_S", 30.0)
    docker = client_naming_its_plugin(tmp_path, answer_after_s=30)
    with pytest.raises(TimeoutError):
        await ComposeCli(bin=docker).run(ARGS, timeout_s=0.3)


async def test_a_lookup_cancelled_is_made_again_by_the_next_command(tmp_path: Path) -> None:
    docker = client_naming_its_plugin(tmp_path, answer_after_s=30)
    started = docker.parent / "info.started"
    os.mkfifo(started)
    cli = ComposeCli(bin=docker)
    first = asyncio.create_task(cli.run(ARGS))
    assert await asyncio.to_thread(started.read_text) == "started"
    started.unlink()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    (docker.parent / "info.sleep").unlink()
    assert (await ran(cli, tmp_path))[0] == "docker-compose"
    assert calls(docker) == [list(PLUGINS_QUERY), list(PLUGINS_QUERY)]
