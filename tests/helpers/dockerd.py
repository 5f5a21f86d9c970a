"""The isolated Docker engine as a pytest fixture body (the engine itself: aklited_sim.dockerd)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aklited_sim.dockerd import DOCKERD, Dockerd, start_dockerd

__all__ = ["Dockerd", "dockerd_fixture", "start_dockerd"]


def dockerd_fixture() -> Iterator[Dockerd]:
    """Body of a fixture: ``dockerd = pytest.fixture(scope="session")(dockerd_fixture)``."""
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    if not DOCKERD.exists():
        pytest.skip("dockerd is not installed")
    engine = start_dockerd()
    try:
        yield engine
    finally:
        engine.stop()
