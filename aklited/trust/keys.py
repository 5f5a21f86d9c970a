"""Public keys of both metadata dialects and signature checks with ``cryptography``.

Key ids are opaque: they are the names a root gives its keys and are never recomputed,
as aktualizr and python-tuf do. Which key types a dialect accepts:

* Foundries (aktualizr): ``keytype`` ``ED25519`` (hex of the raw 32-byte key) or ``RSA``
  (PEM SubjectPublicKeyInfo), case-insensitive, no ``scheme``. RSA signatures are RSASSA-PSS
  with SHA-256 and any salt length.
* TUF spec (python-tuf): ``ed25519``/``ed25519``, ``rsa``/``rsassa-pss-sha256``,
  ``rsa``/``rsa-pkcs1v15-sha256`` and ``ecdsa``/``ecdsa-sha2-nistp256``.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass
from typing import Any, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VerifyingKey: TypeAlias = Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class Dialect(enum.Enum):
    """Which family of tools wrote a metadata set."""

    FOUNDRIES = "foundries"
    """Uptane / ota-tuf / fioctl: capitalised ``_type``, base64 signatures with ``method``."""
    TUF = "tuf"
    """TUF specification / python-tuf: lowercase ``_type``, ``scheme``, hex signatures."""


class KeyFormatError(ValueError):
    """A key entry cannot be used: unsupported type or malformed public value."""


ED25519 = "ed25519"
RSA_PSS = "rsassa-pss-sha256"
RSA_PKCS1 = "rsa-pkcs1v15-sha256"
ECDSA_P256 = "ecdsa-sha2-nistp256"

# Foundries ``method`` values aktualizr accepts; the key type decides how to verify.
FOUNDRIES_METHODS = frozenset({"rsassa-pss", "rsassa-pss-sha256", "ed25519"})


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One verification key from a root.

    Attributes:
        keyid: The key's name in the root (opaque).
        scheme: The signature scheme, normalised to the TUF names above.
        key: The ``cryptography`` public key.
    """

    keyid: str
    scheme: str
    key: VerifyingKey
    material: bytes
    """DER SubjectPublicKeyInfo: tells keys apart when two key ids name the same key."""

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Return True when ``signature`` is this key's valid signature over ``data``."""
        try:
            match self.key:
                case Ed25519PublicKey():
                    self.key.verify(signature, data)
                case rsa.RSAPublicKey() if self.scheme == RSA_PKCS1:
                    self.key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
                case rsa.RSAPublicKey():
                    # The signer chose the salt (ota-tuf 32, python-tuf digest length):
                    # recover it from the signature, as aktualizr does.
                    pss = padding.PSS(
                        mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO
                    )
                    self.key.verify(signature, data, pss, hashes.SHA256())
                case ec.EllipticCurvePublicKey():
                    self.key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def parse_key(keyid: str, entry: Any, dialect: Dialect) -> PublicKey:
    """Build a :class:`PublicKey` from a root's ``keys`` entry.

    Args:
        keyid: The entry's name in ``signed.keys``.
        entry: The entry (``keytype``, ``keyval.public`` and, for TUF, ``scheme``).
        dialect: The dialect of the root that holds it.

    Returns:
        The parsed key.

    Raises:
        KeyFormatError: Unsupported key type or scheme, or a malformed public value.
    """
    if not isinstance(entry, dict):
        raise KeyFormatError(f"key {keyid} is not an object")
    keytype = entry.get("keytype")
    keyval = entry.get("keyval")
    public = keyval.get("public") if isinstance(keyval, dict) else None
    if not isinstance(keytype, str) or not isinstance(public, str):
        raise KeyFormatError(f"key {keyid} lacks keytype or keyval.public")
    if dialect is Dialect.FOUNDRIES:
        scheme = {"ed25519": ED25519, "rsa": RSA_PSS}.get(keytype.lower())
        if scheme is None:
            raise KeyFormatError(f"key {keyid} has unsupported key type {keytype!r}")
    else:
        scheme_value = entry.get("scheme")
        if not isinstance(scheme_value, str):
            raise KeyFormatError(f"key {keyid} lacks a scheme")
        scheme = scheme_value
        allowed = {
            (ED25519, ED25519),
            ("rsa", RSA_PSS),
            ("rsa", RSA_PKCS1),
            ("ecdsa", ECDSA_P256),
            (ECDSA_P256, ECDSA_P256),
        }
        if (keytype, scheme) not in allowed:
            raise KeyFormatError(f"key {keyid} has unsupported key type {keytype}/{scheme}")
    key = _load_public(keyid, scheme, public)
    material = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PublicKey(keyid=keyid, scheme=scheme, key=key, material=material)


def _load_public(keyid: str, scheme: str, public: str) -> VerifyingKey:
    if scheme == ED25519:
        try:
            raw = bytes.fromhex(public)
        except ValueError as e:
            raise KeyFormatError(f"key {keyid}: ed25519 public value is not hex") from e
        if len(raw) != 32:
            raise KeyFormatError(f"key {keyid}: ed25519 public value is not 32 bytes")
        return Ed25519PublicKey.from_public_bytes(raw)
    try:
        loaded = serialization.load_pem_public_key(public.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFormatError(f"key {keyid}: public value is not a PEM public key") from e
    if scheme in (RSA_PSS, RSA_PKCS1) and isinstance(loaded, rsa.RSAPublicKey):
        return loaded
    if (
        scheme == ECDSA_P256
        and isinstance(loaded, ec.EllipticCurvePublicKey)
        and isinstance(loaded.curve, ec.SECP256R1)
    ):
        return loaded
    raise KeyFormatError(f"key {keyid}: PEM key does not match scheme {scheme}")


def decode_signature(entry: Any, dialect: Dialect) -> tuple[str, bytes | None]:
    """Return ``(keyid, signature bytes)`` of one ``signatures`` entry.

    The bytes are None when the value cannot be decoded: such a signature simply does not
    count towards a threshold (python-tuf behaves the same).

    Raises:
        KeyFormatError: The entry is not an object with string ``keyid`` and ``sig`` (and,
            for the Foundries dialect, a known ``method``).
    """
    if not isinstance(entry, dict):
        raise KeyFormatError("a signature entry is not an object")
    keyid = entry.get("keyid")
    sig = entry.get("sig")
    if not isinstance(keyid, str) or not isinstance(sig, str):
        raise KeyFormatError("a signature entry lacks a string keyid or sig")
    if dialect is Dialect.FOUNDRIES:
        method = entry.get("method")
        if not isinstance(method, str) or method.lower() not in FOUNDRIES_METHODS:
            raise KeyFormatError(f"signature by {keyid} has unsupported method {method!r}")
        try:
            return keyid, binascii.a2b_base64(sig, strict_mode=True)
        except binascii.Error:
            return keyid, None
    try:
        return keyid, bytes.fromhex(sig)
    except ValueError:
        return keyid, None
