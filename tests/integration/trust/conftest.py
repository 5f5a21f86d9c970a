"""A simulated device for bundle checks: configuration, provisioned roots, a real journal.

The journal already trusts metadata from an earlier bundle (version 1, target 41) and
records target 41 as installed, as on a device that took one offline update before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from aklite_bundle.signing import Keyring
from aklited.bundle.device import DeviceFacts
from aklited.bundle.verify import verify_bundle_sync
from aklited.config import Config, load_config
from aklited.engine.journal import Journal
from aklited.wiring import device_facts
from tests.helpers.tuf_repo import HWID, TAG, keyring, target_spec, write_foundries_bundle


@dataclass
class Device:
    root: Path
    config: Config
    ring: Keyring

    @property
    def db_path(self) -> Path:
        return self.config.storage.db_path

    @property
    def facts(self) -> DeviceFacts:
        return device_facts(self.config)

    def state(self) -> dict[str, bytes]:
        """Every file under storage.path and the provisioned roots, by path.

        SQLite's ``-shm`` index, which any reader of a WAL journal creates, is left out; a
        ``-wal`` file must stay empty (nothing was written).
        """
        files: dict[str, bytes] = {}
        for base in (self.config.storage.path, self.config.storage.uptane_metadata_path):
            for path in sorted(base.rglob("*")):
                if not path.is_file() or path.name.endswith("-shm"):
                    continue
                data = path.read_bytes()
                if path.name.endswith("-wal") and not data:
                    continue
                files[str(path)] = data
        return files


def make_device(tmp_path: Path, *, ring: Keyring, tags: str = TAG, extra: str = "") -> Device:
    provisioned = tmp_path / "usr-lib-sota-tuf" / "ci"
    provisioned.mkdir(parents=True)
    (provisioned / "1.root.json").write_bytes(ring.roots[0])
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "sota.toml").write_text(
        f"""
[provision]
primary_ecu_hardware_id = "{HWID}"
[pacman]
type = "ostree+compose_apps"
tags = "{tags}"
sysroot = "{tmp_path}/sysroot"
{extra}
[storage]
path = "{tmp_path}/sota"
uptane_metadata_path = "{tmp_path}/usr-lib-sota-tuf"
[aklited]
device_type = "ci"
"""
    )
    config = load_config([conf])
    return Device(root=tmp_path, config=config, ring=ring)


def seed_previous_update(device: Device, *, version: int = 1, target: int = 41) -> None:
    """Verify an earlier bundle into the journal and record its target as current."""
    base = write_foundries_bundle(
        device.root / f"previous-{version}", device.ring, [target_spec(target)], version=version
    )
    store = Journal.open(device.db_path)
    try:
        verify_bundle_sync(
            base,
            store=store,
            device=device.facts,
            provisioned_roots=device.config.storage.uptane_metadata_path / "ci",
        )
        spec = target_spec(target)
        record = store.begin_install(
            target_name=spec.name, version=target, ostree_commit=spec.ostree_commit, apps=spec.apps
        )
        store.finish_install(
            record.id, state="done", result_code=0, result_message="ok", make_current=True
        )
    finally:
        store.close()


@pytest.fixture
def device(tmp_path: Path) -> Device:
    dev = make_device(tmp_path, ring=keyring())
    seed_previous_update(dev)
    return dev
