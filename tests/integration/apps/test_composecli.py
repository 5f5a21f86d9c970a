"""The real docker client names its compose plugin, and that plugin run by itself answers as
``docker compose`` does."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from aklited.apps.composecli import DEFAULT_COMPOSE_BIN, ComposeCli

pytestmark = pytest.mark.docker


async def test_the_docker_clients_compose_plugin_is_run_directly(tmp_path: Path) -> None:
    # No engine: the plugin query must not need one.
    cli = ComposeCli(bin=DEFAULT_COMPOSE_BIN, docker_host=f"unix://{tmp_path}/no-engine.sock")
    [plugin] = await cli.command()
    assert Path(plugin).name == "docker-compose"
    assert Path(plugin).is_absolute()

    direct = await cli.run(["version", "--short"])
    through_client = await asyncio.to_thread(
        subprocess.run,
        [str(DEFAULT_COMPOSE_BIN), "compose", "version", "--short"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert direct.returncode == 0, direct.stderr
    assert direct.stdout == through_client.stdout
    assert direct.stdout.strip()
