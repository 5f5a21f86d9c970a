"""Metadata signed by ota-tuf and aktualizr's own fixtures verify with our Foundries dialect."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from aklited.errors import TrustError
from aklited.trust.canonical import foundries_canonical
from aklited.trust.keys import Dialect
from aklited.trust.metadata import parse_envelope
from aklited.trust.trusted import TrustedSet, verify_role

DATA = Path(__file__).parent / "data"
IN_2019 = datetime(2019, 1, 1, tzinfo=UTC)
IN_2030 = datetime(2030, 1, 1, tzinfo=UTC)


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


def test_ota_tuf_rsa_root_and_targets_verify() -> None:
    raw = read("ota-tuf-director-1.root.json")
    # The server's file is not in canonical form: signatures cover the re-serialisation.
    assert foundries_canonical(json.loads(raw)) != raw
    trusted = TrustedSet(raw, reference_time=IN_2019, filename="1.root.json")
    assert trusted.dialect is Dialect.FOUNDRIES
    root = trusted.root.signed
    for keyid, key in root.keys.items():
        assert hashlib.sha256(key.material).hexdigest() == keyid  # fioctl/ota-tuf key ids
    targets = parse_envelope(
        read("ota-tuf-director-targets.json"),
        role="targets",
        filename="targets.json",
        dialect=Dialect.FOUNDRIES,
    )
    verify_role(targets, root, "targets")
    with pytest.raises(TrustError) as err:
        verify_role(targets, root, "snapshot")
    assert err.value.code == 11


def test_ota_tuf_signs_with_salt_32_not_the_maximum() -> None:
    """ota-tuf signs with salt 32 (python-tuf: digest length): the verifier recovers the salt."""
    targets = json.loads(read("ota-tuf-director-targets.json"))
    root = json.loads(read("ota-tuf-director-1.root.json"))
    keyid = targets["signatures"][0]["keyid"]
    public = serialization.load_pem_public_key(
        root["signed"]["keys"][keyid]["keyval"]["public"].encode()
    )
    assert isinstance(public, rsa.RSAPublicKey)

    signature = base64.b64decode(targets["signatures"][0]["sig"])
    payload = foundries_canonical(targets["signed"])
    mgf = padding.MGF1(hashes.SHA256())
    public.verify(signature, payload, padding.PSS(mgf=mgf, salt_length=32), hashes.SHA256())
    with pytest.raises(InvalidSignature):  # a verifier with a fixed, other salt fails
        public.verify(signature, payload, padding.PSS(mgf=mgf, salt_length=0), hashes.SHA256())


def test_ota_tuf_root_expired_is_12() -> None:
    trusted = TrustedSet(read("ota-tuf-director-1.root.json"), reference_time=IN_2030)
    with pytest.raises(TrustError) as err:
        trusted.check_root_expiry()
    assert err.value.code == 12


def test_aktualizr_sample1_full_set() -> None:
    trusted = TrustedSet(read("aktualizr-sample1-root.json"), reference_time=IN_2030)
    assert trusted.update_timestamp(read("aktualizr-sample1-timestamp.json"))
    trusted.update_snapshot(read("aktualizr-sample1-snapshot.json"))
    trusted.update_targets(read("aktualizr-sample1-targets.json"))
    assert trusted.targets is not None
    assert list(trusted.targets.signed.targets) == ["targets/file.txt"]


def test_aktualizr_sample1_tampered_snapshot_is_refused() -> None:
    trusted2 = TrustedSet(read("aktualizr-sample1-root.json"), reference_time=IN_2030)
    trusted2.update_timestamp(read("aktualizr-sample1-timestamp.json"))
    document = json.loads(read("aktualizr-sample1-snapshot.json"))
    document["signed"]["version"] += 1
    with pytest.raises(TrustError) as err:
        trusted2.update_snapshot(json.dumps(document).encode())
    assert err.value.code == 11 and "snapshot.json" in err.value.message


def test_aktualizr_rsassa_pss_root_is_self_signed() -> None:
    trusted = TrustedSet(read("aktualizr-rsassa-pss-root.json"), reference_time=IN_2030)
    assert trusted.root.version == 1
    assert all(key.scheme == "rsassa-pss-sha256" for key in trusted.root.signed.keys.values())
