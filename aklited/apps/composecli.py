"""How aklited invokes ``docker compose``: which binary, which engine, which environment."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from aklited.apps import proc

log = structlog.get_logger(__name__)

DEFAULT_COMPOSE_BIN = Path("/usr/bin/docker")
# The docker client's own list of the plugins it found, without asking the engine.
PLUGINS_QUERY = ("info", "--format", "{{json .ClientInfo.Plugins}}")
# The client answers from its own files in well under a second; one that takes longer is
# not waited for again (compose then runs through it, as it always could).
PLUGINS_QUERY_TIMEOUT_S = 5.0


@dataclass
class _PluginPath:
    """Where the docker client runs its compose plugin from, once asked."""

    asked: bool = False
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class ComposeCli:
    """Compose aimed at one engine (``DOCKER_HOST``).

    ``bin`` is read as aktualizr-lite reads ``pacman.docker_compose_bin``: a binary named
    ``docker`` runs its compose plugin (``docker compose ...``); any other binary is compose
    itself (``/usr/bin/docker-compose ...``).

    Behind ``docker compose``, the client starts, asks the plugin for its metadata (a second
    start) and then runs it: three Go programs for one command, and on a cold page cache
    the client's binary read in as well. So the client is asked once where the plugin is
    (:data:`PLUGINS_QUERY`, its own plugin search, the engine not contacted) and the plugin
    is run directly from then on, as compose runs standalone. Whatever keeps that from
    working, the lookup or a start of the plugin, falls back to ``docker compose``.
    """

    bin: Path = DEFAULT_COMPOSE_BIN
    docker_host: str | None = None
    # Frozen, yet it learns where the plugin is: on first use, for the life of the instance.
    _plugin: _PluginPath = field(default_factory=_PluginPath, init=False, compare=False, repr=False)

    @property
    def name(self) -> str:
        """How the command is named in messages: ``docker compose`` or ``docker-compose``."""
        return f"{self.bin.name} compose" if self._is_docker else self.bin.name

    @property
    def _is_docker(self) -> bool:
        return self.bin.name == "docker"

    def env(self) -> dict[str, str]:
        """The process environment with ``DOCKER_HOST`` set and no stray ``COMPOSE_*`` settings.

        Variables such as ``COMPOSE_FILE`` or ``COMPOSE_PROFILES`` in the daemon's environment
        would silently change which files and services a project has.
        """
        # DOCKER_CLI_PLUGIN_*: the client's hand-over to a plugin; inherited, it would make
        # compose run standalone read its arguments as the client's.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("COMPOSE_", "DOCKER_CLI_PLUGIN_"))
        }
        if self.docker_host:
            env["DOCKER_HOST"] = self.docker_host
        return env

    async def command(self, *, timeout_s: float = PLUGINS_QUERY_TIMEOUT_S) -> list[str]:
        """The command line before compose's own arguments (finding the plugin, the first
        time, in ``timeout_s`` at most)."""
        if not self._is_docker:
            return [str(self.bin)]
        if not self._plugin.asked:
            self._plugin.path = await self._find_plugin(min(timeout_s, PLUGINS_QUERY_TIMEOUT_S))
            self._plugin.asked = True
        if self._plugin.path is not None:
            return [str(self._plugin.path)]
        return self._through_client

    @property
    def _through_client(self) -> list[str]:
        return [str(self.bin), "compose"]

    async def run(
        self, args: Sequence[str], *, cwd: Path | None = None, timeout_s: float = 300.0
    ) -> proc.Completed:
        """Run compose with ``args``.

        Raises:
            OSError: the binary cannot be started.
            TimeoutError: the command ran longer than ``timeout_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s  # the plugin's lookup counts against it
        command = await self.command(timeout_s=timeout_s)
        remaining = max(0.0, deadline - loop.time())
        try:
            return await proc.run([*command, *args], cwd=cwd, env=self.env(), timeout_s=remaining)
        except OSError as e:
            plugin = self._plugin.path
            if plugin is None or command[0] != str(plugin) or e.filename != str(plugin):
                raise
            # Gone (replaced, say) or not a program: the client finds it, or says why not.
            log.info("compose plugin cannot start", plugin=str(plugin), error=str(e))
            self._plugin.path = None
            return await proc.run(
                [*self._through_client, *args], cwd=cwd, env=self.env(), timeout_s=remaining
            )

    async def _find_plugin(self, timeout_s: float) -> Path | None:
        try:
            done = await proc.run(
                [str(self.bin), *PLUGINS_QUERY], env=self.env(), timeout_s=timeout_s
            )
            found = compose_plugin(done)
        except (OSError, TimeoutError, ValueError) as e:
            log.info("docker compose runs through the docker client", reason=str(e) or repr(e))
            return None
        log.debug("compose plugin found", plugin=str(found))
        return found


def compose_plugin(done: proc.Completed) -> Path:
    """The compose plugin the client lists in its answer to :data:`PLUGINS_QUERY`, by an
    absolute path.

    Raises:
        ValueError: it lists none it can use, or the answer does not parse.
    """
    if done.returncode != 0:
        raise ValueError(f"docker info: {done.last_error_line()}")
    plugins = json.loads(done.stdout)  # a JSONDecodeError is a ValueError
    for plugin in plugins if isinstance(plugins, list) else []:
        if not isinstance(plugin, dict) or plugin.get("Name") != "compose":
            continue
        if plugin.get("Err"):
            raise ValueError(f"the docker client cannot use its compose plugin: {plugin['Err']}")
        path = plugin.get("Path")
        if not isinstance(path, str) or not Path(path).is_absolute():
            raise ValueError(f"the compose plugin's path {path!r} is not absolute")
        return Path(path)
    raise ValueError("the docker client lists no compose plugin")
