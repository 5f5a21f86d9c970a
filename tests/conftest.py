"""Suite-wide settings. Fixtures that start real components live beside the tests that use
them (``tests/integration/<area>/conftest.py``) or in ``tests/helpers``."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked `root` drive loop devices, mounts and namespaces; skip them, loudly,
    # when the suite is run unprivileged rather than failing in confusing ways.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop devices, mounts, namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
