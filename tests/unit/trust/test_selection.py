"""Target selection on verified bundles, as aktualizr-lite selects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aklited.bundle.device import DeviceFacts
from aklited.bundle.select import parse_version, select_target_sync
from aklited.bundle.verify import VerifiedBundle, verify_bundle_sync
from aklited.errors import SelectionError
from aklited.trust.storage import OverlayTrustStore
from tests.helpers.tuf_repo import (
    HWID,
    TAG,
    add_commit_object,
    app_uri,
    keyring,
    target_spec,
    write_app_uris,
    write_foundries_bundle,
)

DEVICE = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,))


def verified(
    tmp_path: Path, targets: list[Any], *, device: DeviceFacts = DEVICE, **kw: Any
) -> VerifiedBundle:
    ring = keyring()
    bundle = write_foundries_bundle(tmp_path / "bundle", ring, targets, **kw)
    store = OverlayTrustStore(None)
    store.tuf_save("root", 1, ring.roots[0])
    return verify_bundle_sync(bundle, store=store, device=device, provisioned_roots=None)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("42", 42),
        ("0x10", 16),
        ("010", 8),
        ("08", 0),
        ("12abc", 12),
        (" 7", 7),
        ("-3", -3),
        ("+5", 5),
        ("abc", None),
        ("", None),
        (5, 5),
        (True, None),
        (None, None),
    ],
)
def test_version_parsing_follows_stoi_base_zero(text: object, value: int | None) -> None:
    assert parse_version(text) == value


def test_highest_integer_version_wins(tmp_path: Path) -> None:
    targets = [
        target_spec(40),
        target_spec(42, custom={"version": "9"}),
        target_spec(41, custom={"version": "010"}),  # octal 8, not 10
    ]
    chosen = select_target_sync(verified(tmp_path, targets), DEVICE)
    assert chosen.name == f"{HWID}-lmp-40"
    assert chosen.version == 40
    targets.append(target_spec(43, custom={"version": "0x2B"}))
    chosen = select_target_sync(verified(tmp_path / "2", targets), DEVICE)
    assert (chosen.name, chosen.version) == (f"{HWID}-lmp-43", 43)
    assert chosen.ostree_commit == targets[-1].ostree_commit
    assert chosen.apps == dict(targets[-1].apps)
    assert chosen.tags == (TAG,)
    assert chosen.custom["targetFormat"] == "OSTREE"


def test_named_target_and_unknown_name(tmp_path: Path) -> None:
    bundle = verified(tmp_path, [target_spec(40), target_spec(42)])
    assert select_target_sync(bundle, DEVICE, target_name=f"{HWID}-lmp-40").version == 40
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE, target_name=f"{HWID}-lmp-99")
    assert err.value.code == 20
    assert f"{HWID}-lmp-99" in err.value.message


def test_newer_target_without_content_is_skipped(tmp_path: Path) -> None:
    bundle = verified(tmp_path, [target_spec(40), target_spec(42)], content=False)
    add_commit_object(bundle.layout.root, target_spec(40).ostree_commit)
    write_app_uris(bundle.layout.root, dict(target_spec(40).apps))
    assert select_target_sync(bundle, DEVICE).version == 40
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE, target_name=f"{HWID}-lmp-42")
    assert err.value.code == 8


def test_no_content_at_all_is_8(tmp_path: Path) -> None:
    bundle = verified(tmp_path, [target_spec(42)], content=False)
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE)
    assert err.value.code == 8
    assert "ostree_repo/objects/" in err.value.message


def test_more_than_one_hardware_id_does_not_match(tmp_path: Path) -> None:
    spec = target_spec(42, custom={"hardwareIds": [HWID, "other"]})
    with pytest.raises(SelectionError) as err:
        select_target_sync(verified(tmp_path, [spec]), DEVICE)
    assert err.value.code == 6


def test_device_without_tags_accepts_any_tag(tmp_path: Path) -> None:
    untagged = DeviceFacts(hardware_id=HWID, device_type="ci")
    bundle = verified(tmp_path, [target_spec(42, tags=("devel",))], tag="devel", device=untagged)
    assert select_target_sync(bundle, untagged).version == 42
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE)
    assert err.value.code == 6


def two_apps(**custom: Any) -> Any:
    apps = {"a": app_uri("a"), "b": app_uri("b")}
    return target_spec(42, apps=apps, custom=custom)


def test_app_shortlists(tmp_path: Path) -> None:
    spec = two_apps()
    bundle = verified(tmp_path, [spec], content=False)
    add_commit_object(bundle.layout.root, spec.ostree_commit)
    write_app_uris(bundle.layout.root, {"a": spec.apps["a"]})  # b is not in the bundle
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE)
    assert err.value.code == 8 and "app b" in err.value.message
    only_a = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,), compose_apps=("a",))
    assert select_target_sync(bundle, only_a).apps == {"a": spec.apps["a"]}
    no_apps = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,), compose_apps=())
    assert select_target_sync(bundle, no_apps).apps == {}
    ostree_only = DeviceFacts(hardware_id=HWID, device_type="ci", tags=(TAG,), with_apps=False)
    assert select_target_sync(bundle, ostree_only).apps == {}


@pytest.mark.parametrize(
    ("fetched", "expected"),
    [
        ({"uri": "", "shortlist": ""}, set()),
        ({"uri": None}, set()),
        ({"uri": "https://x/apps.tar", "shortlist": "a"}, {"a"}),
        ({"uri": "https://x/apps.tar", "shortlist": " a , b "}, {"a", "b"}),
        ({"uri": "https://x/apps.tar", "shortlist": ""}, {"a", "b"}),
        ("not an object", {"a", "b"}),
    ],
)
def test_fetched_apps_shortlist(tmp_path: Path, fetched: Any, expected: set[str]) -> None:
    spec = two_apps(**{"fetched-apps": fetched})
    bundle = verified(tmp_path, [spec])
    assert set(select_target_sync(bundle, DEVICE).apps) == expected


def test_downgrade_needs_force(tmp_path: Path) -> None:
    bundle = verified(tmp_path, [target_spec(42)])
    with pytest.raises(SelectionError) as err:
        select_target_sync(bundle, DEVICE, current_version=50, current_name="x")
    assert err.value.code == 102
    assert "--force" in err.value.message
    assert select_target_sync(bundle, DEVICE, current_version=50, force=True).version == 42
    same = select_target_sync(bundle, DEVICE, current_version=50, current_name=f"{HWID}-lmp-42")
    assert same.version == 42
