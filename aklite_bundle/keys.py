"""Signing keys for Foundries-dialect metadata, and the keyring directory that holds them.

A keyring directory holds the private keys (``keys/<keyid>.pem``, PKCS#8 PEM, mode 0600)
and the roots signed so far (``N.root.json``). The newest root says which keys sign which
role and with what threshold. Key ids are sha256 of the DER SubjectPublicKeyInfo, as
fioctl computes them.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KeyKind = Literal["ed25519", "rsa"]
RSA_PSS_SALT = 32  # what ota-tuf / fioctl sign with


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key able to sign Foundries-dialect metadata."""

    keyid: str
    private: Ed25519PrivateKey | rsa.RSAPrivateKey

    @property
    def kind(self) -> KeyKind:
        """``ed25519`` or ``rsa``."""
        return "ed25519" if isinstance(self.private, Ed25519PrivateKey) else "rsa"

    def public_entry(self) -> dict[str, Any]:
        """The key as a root lists it (``ED25519`` hex or ``RSA`` PEM)."""
        public = self.private.public_key()
        if isinstance(self.private, Ed25519PrivateKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return {"keytype": "ED25519", "keyval": {"public": raw.hex()}}
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {"keytype": "RSA", "keyval": {"public": pem.decode("ascii")}}

    def sign(self, data: bytes) -> dict[str, str]:
        """A signature object over ``data``: ``keyid``, ``method``, base64 ``sig``."""
        if isinstance(self.private, Ed25519PrivateKey):
            signature, method = self.private.sign(data), "ed25519"
        else:
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=RSA_PSS_SALT)
            signature, method = self.private.sign(data, pss, hashes.SHA256()), "rsassa-pss-sha256"
        return {"keyid": self.keyid, "method": method, "sig": base64.b64encode(signature).decode()}

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def key_id(private: Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    """fioctl's key id: sha256 of the DER SubjectPublicKeyInfo, lowercase hex."""
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def generate_key(kind: KeyKind = "ed25519", *, rsa_bits: int = 4096) -> SigningKey:
    """Make a new signing key (fioctl uses RSA 4096 or Ed25519)."""
    private: Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "ed25519":
        private = Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return SigningKey(keyid=key_id(private), private=private)


def load_key(pem: bytes) -> SigningKey:
    """Read a PEM private key written by :meth:`SigningKey.private_pem`.

    Raises:
        TypeError: Not an unencrypted Ed25519 or RSA private key.
    """
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise TypeError("only Ed25519 and RSA keys can sign Foundries metadata")
    return SigningKey(keyid=key_id(private), private=private)


def save_key(directory: Path, key: SigningKey) -> Path:
    """Write ``keys/<keyid>.pem`` with mode 0600 under ``directory``."""
    keys_dir = directory / "keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    path = keys_dir / f"{key.keyid}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(key.private_pem())
    return path


def load_keys(directory: Path) -> dict[str, SigningKey]:
    """All private keys under ``directory/keys``, by key id."""
    keys: dict[str, SigningKey] = {}
    keys_dir = directory / "keys"
    if keys_dir.is_dir():
        for path in sorted(keys_dir.glob("*.pem")):
            key = load_key(path.read_bytes())
            keys[key.keyid] = key
    return keys
