"""How aklited invokes ``docker compose``: which binary, which engine, which environment."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aklited.apps import proc

DEFAULT_COMPOSE_BIN = Path("/usr/bin/docker")


@dataclass(frozen=True, slots=True)
class ComposeCli:
    """Compose aimed at one engine (``DOCKER_HOST``).

    ``bin`` is read as aktualizr-lite reads ``pacman.docker_compose_bin``: a binary named
    ``docker`` runs its compose plugin (``docker compose ...``); any other binary is compose
    itself (``/usr/bin/docker-compose ...``), which also spares the docker client's start.
    """

    bin: Path = DEFAULT_COMPOSE_BIN
    docker_host: str | None = None

    @property
    def prefix(self) -> list[str]:
        """The command line before compose's own arguments."""
        return [str(self.bin), "compose"] if self.bin.name == "docker" else [str(self.bin)]

    @property
    def name(self) -> str:
        """How the command is named in messages: ``docker compose`` or ``docker-compose``."""
        return " ".join([self.bin.name, *self.prefix[1:]])

    def env(self) -> dict[str, str]:
        """The process environment with ``DOCKER_HOST`` set and no stray ``COMPOSE_*`` settings.

        Variables such as ``COMPOSE_FILE`` or ``COMPOSE_PROFILES`` in the daemon's environment
        would silently change which files and services a project has.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env

    async def run(
        self, args: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 300.0
    ) -> proc.Completed:
        """Run compose with ``args``.

        Raises:
            OSError: the binary cannot be started.
            TimeoutError: the command ran longer than ``timeout_s``.
        """
        return await proc.run([*self.prefix, *args], cwd=cwd, env=self.env(), timeout_s=timeout_s)
