"""``aklite-offline`` that kills itself at one journal phase: the crash tests' entry point.

``python -m tests.helpers.crash_cli PHASE ARGS...`` runs the real command line with the
engine's checkpoint set to SIGKILL this process right after the journal records PHASE,
before the step it announces acts. Production code knows nothing of it: the checkpoint is
injected through the composition, as the engine unit tests inject theirs.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aklited import wiring
from aklited.cli import offline
from aklited.engine.engine import Engine
from aklited.engine.phases import Phase


def main(argv: list[str]) -> int:
    crash_at = Phase(argv[0])
    real_build = wiring.build_engine

    def checkpoint(phase: Phase) -> None:
        if phase == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)

    @asynccontextmanager
    async def build_engine(*args: Any, **kwargs: Any) -> AsyncIterator[Engine]:
        async with real_build(*args, checkpoint=checkpoint, **kwargs) as engine:
            yield engine

    wiring.build_engine = build_engine  # type: ignore[assignment]
    return offline.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
