"""Key parsing and signatures in both dialects, including RSA-PSS salt lengths."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aklite_bundle.keys import generate_key, load_key
from aklited.trust.keys import Dialect, KeyFormatError, decode_signature, parse_key

DATA = b'{"_type":"Targets","version":1}'


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize("salt", [32, padding.PSS.DIGEST_LENGTH, padding.PSS.MAX_LENGTH, 0])
def test_rsa_pss_any_salt_verifies(rsa_key: rsa.RSAPrivateKey, salt: int) -> None:
    key = parse_key("k", {"keytype": "RSA", "keyval": {"public": _pem(rsa_key)}}, Dialect.FOUNDRIES)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=salt)
    signature = rsa_key.sign(DATA, pss, hashes.SHA256())
    assert key.verify(signature, DATA)
    assert not key.verify(signature, DATA + b" ")


def test_foundries_key_types_are_case_insensitive_and_limited() -> None:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key = parse_key("k", {"keytype": "ed25519", "keyval": {"public": raw.hex()}}, Dialect.FOUNDRIES)
    assert key.verify(private.sign(DATA), DATA)
    ec_private = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(KeyFormatError, match="unsupported key type"):
        parse_key(
            "k",
            {"keytype": "ECPRIME256V1", "keyval": {"public": _pem(ec_private)}},
            Dialect.FOUNDRIES,
        )


def test_tuf_ecdsa_and_scheme_required() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    entry = {
        "keytype": "ecdsa",
        "scheme": "ecdsa-sha2-nistp256",
        "keyval": {"public": _pem(private)},
    }
    key = parse_key("k", entry, Dialect.TUF)
    assert key.verify(private.sign(DATA, ec.ECDSA(hashes.SHA256())), DATA)
    with pytest.raises(KeyFormatError, match="scheme"):
        parse_key("k", {"keytype": "ecdsa", "keyval": {"public": _pem(private)}}, Dialect.TUF)
    wrong_curve = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFormatError):
        parse_key("k", {**entry, "keyval": {"public": _pem(wrong_curve)}}, Dialect.TUF)


def test_malformed_public_values_are_refused() -> None:
    with pytest.raises(KeyFormatError, match="not hex"):
        parse_key("k", {"keytype": "ED25519", "keyval": {"public": "zz"}}, Dialect.FOUNDRIES)
    with pytest.raises(KeyFormatError, match="32 bytes"):
        parse_key("k", {"keytype": "ED25519", "keyval": {"public": "00"}}, Dialect.FOUNDRIES)
    with pytest.raises(KeyFormatError, match="PEM"):
        parse_key("k", {"keytype": "RSA", "keyval": {"public": "junk"}}, Dialect.FOUNDRIES)


def test_signing_keys_round_trip_and_fioctl_key_id(rsa_key: rsa.RSAPrivateKey) -> None:
    for signing in (generate_key("ed25519"), generate_key("rsa", rsa_bits=2048)):
        again = load_key(signing.private_pem())
        assert again.keyid == signing.keyid
        entry = signing.public_entry()
        assert entry["keytype"] in ("ED25519", "RSA")
        key = parse_key(signing.keyid, entry, Dialect.FOUNDRIES)
        sig = signing.sign(DATA)
        keyid, decoded = decode_signature(sig, Dialect.FOUNDRIES)
        assert keyid == signing.keyid and decoded is not None
        assert key.verify(decoded, DATA)
        assert base64.b64decode(sig["sig"]) == decoded


def test_signature_entries() -> None:
    assert decode_signature({"keyid": "a", "sig": "zz"}, Dialect.TUF) == ("a", None)
    with pytest.raises(KeyFormatError, match="method"):
        decode_signature({"keyid": "a", "sig": "AA=="}, Dialect.FOUNDRIES)
    assert decode_signature(
        {"keyid": "a", "sig": "AA==", "method": "RSASSA-PSS"}, Dialect.FOUNDRIES
    ) == ("a", b"\x00")
    with pytest.raises(KeyFormatError):
        decode_signature({"keyid": 1, "sig": "AA=="}, Dialect.TUF)
