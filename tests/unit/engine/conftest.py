"""The engine unit tests' rig: an in-memory device (``tests/fakes.py``) and a real journal."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.fakes import Rig


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """The engine's log entries, captured rather than rendered: the console renderer reads
    source files to show a traceback, which the blockbuster fixture counts as blocking."""
    with structlog.testing.capture_logs() as captured:
        yield captured
