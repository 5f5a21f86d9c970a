"""The daemon's parts run over the engine unit tests' rig (tests/fakes.py)."""

from tests.unit.engine.conftest import logs, rig

__all__ = ["logs", "rig"]
