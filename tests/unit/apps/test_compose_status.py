from __future__ import annotations

import json

import pytest

from aklited.apps.blobs import Blob
from aklited.apps.compose import AppStatus, ServiceStatus, render_override
from aklited.apps.model import App, AppImage, Service

HEX = "ab" * 32


@pytest.mark.parametrize(
    ("state", "exit_code", "health", "ok", "failed"),
    [
        ("running", 0, None, True, False),
        ("exited", 0, None, True, False),
        ("exited", 1, None, False, True),
        ("restarting", 2, None, False, True),
        ("created", 0, None, False, False),
        ("missing", None, None, False, False),
        ("running", 0, "starting", True, False),
        ("running", 0, "unhealthy", False, True),
        ("dead", 137, None, False, True),
    ],
)
def test_service_state_rules(
    state: str, exit_code: int | None, health: str | None, ok: bool, failed: bool
) -> None:
    status = ServiceStatus("web", "c1", state, exit_code, health)
    assert status.ok is ok
    assert status.failed is failed


def test_app_without_services_is_not_running() -> None:
    assert not AppStatus("a", ()).running
    running = ServiceStatus("web", "c", "running", 0, None)
    exited = ServiceStatus("job", "d", "exited", 3, None)
    app = AppStatus("a", (running, exited))
    assert not app.running
    assert app.failed == (exited,)


def test_override_points_each_service_at_the_local_tag() -> None:
    image = AppImage(
        ref=f"h/f/busybox@sha256:{HEX}",
        locator="h/f/busybox",
        root=Blob(HEX, 1),
        manifest=Blob(HEX, 1),
        config=Blob("cd" * 32, 1),
        layers=(Blob("ef" * 32, 1),),
    )
    app = App(
        name="a",
        uri="u",
        manifest=Blob("01" * 32, 1),
        bundle=Blob("02" * 32, 1),
        extras=(),
        services=(Service("web", image.ref, None), Service("job", image.ref, "h")),
        images=(image,),
    )
    override = json.loads(render_override(app))
    assert override == {
        "services": {
            "web": {"image": f"h/f/busybox:{HEX[:7]}", "pull_policy": "never"},
            "job": {"image": f"h/f/busybox:{HEX[:7]}", "pull_policy": "never"},
        }
    }
