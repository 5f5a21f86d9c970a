"""Asking whether a Docker engine answers: every way it can fail is one clear refusal (80)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aklited.apps import adapter
from aklited.apps.adapter import ComposeApps
from aklited.errors import AppsEngineMissingError
from aklited.outcomes import StatusCode


def apps_at(tmp_path: Path, docker_host: str) -> ComposeApps:
    return ComposeApps(
        store_root=tmp_path / "store", compose_root=tmp_path / "compose", docker_host=docker_host
    )


async def test_no_socket_is_no_engine(tmp_path: Path) -> None:
    async with apps_at(tmp_path, f"unix://{tmp_path}/absent.sock") as apps:
        with pytest.raises(AppsEngineMissingError) as refused:
            await apps.engine_ready()
    assert refused.value.code == StatusCode.IMAGE_LOAD_FAILED
    assert f"no Docker engine answers at unix://{tmp_path}/absent.sock" in refused.value.message


async def test_a_docker_host_without_a_scheme_is_no_engine(tmp_path: Path) -> None:
    # A typo in the configuration must not crash the daemon at start.
    async with apps_at(tmp_path, "/var/run/docker.sock") as apps:
        with pytest.raises(AppsEngineMissingError, match=re.escape("/var/run/docker.sock")):
            await apps.engine_ready()


@pytest.fixture
async def silent_engine(tmp_path: Path) -> AsyncIterator[Path]:
    """A socket that accepts connections and never answers."""
    path = tmp_path / "silent.sock"
    accepted: list[socket.socket] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.setblocking(False)
    loop = asyncio.get_running_loop()

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(server)
            accepted.append(conn)

    task = asyncio.create_task(accept())
    try:
        yield path
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for conn in accepted:
            conn.close()
        server.close()


async def test_an_engine_that_never_answers_is_no_engine(
    tmp_path: Path, silent_engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapter, "ENGINE_PROBE_S", 0.2)
    async with apps_at(tmp_path, f"unix://{silent_engine}") as apps:
        with pytest.raises(AppsEngineMissingError, match=re.escape("within 0.2 s")):
            await apps.engine_ready()
