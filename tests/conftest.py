"""Suite-wide settings. Fixtures that start real components live beside the tests that use
them (``tests/integration/<area>/conftest.py``) or in ``tests/helpers``."""

from __future__ import annotations

import inspect
import os
import pkgutil
from collections.abc import Iterator

import pytest
from blockbuster import blockbuster_ctx

import aklited


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked `root` drive loop devices, mounts and namespaces; skip them, loudly,
    # when the suite is run unprivileged rather than failing in confusing ways.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts, namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


# The device package's modules and sub-packages, named one by one: blockbuster matches file
# path prefixes, and "aklited" alone would also match aklited_sim (which may block: it is
# test tooling).
_DEVICE_MODULES = [f"aklited.{info.name}" for info in pkgutil.iter_modules(aklited.__path__)]


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any async test in which aklited makes a blocking call on the event loop.

    Only calls made from aklited's own code count (``scanned_modules``): a test may block
    its own loop while it prepares a fixture, the device package may not. ruff's ASYNC rules
    see only direct calls; this catches the ones behind a helper.
    """
    if not inspect.iscoroutinefunction(request.function):
        yield
        return
    with blockbuster_ctx(_DEVICE_MODULES) as detector:
        # Importing a module reads its file; that happens once, at first use, by design.
        detector.functions["io.BufferedReader.read"].can_block_in(
            "importlib/_bootstrap_external.py", "get_data"
        )
        yield
