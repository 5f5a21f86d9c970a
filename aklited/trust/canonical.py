"""Canonical JSON: the exact bytes a signer signed.

Two forms exist and a verifier must use the one the signer used:

* Foundries / ota-tuf / aktualizr: compact, keys sorted, standard JSON escaping with every
  code point >= 0x80 and every control character written as ``\\uXXXX`` (jsoncpp's
  default, which is ``json.dumps(..., ensure_ascii=True)``).
* TUF spec / python-tuf: OLPC canonical JSON. Compact, keys sorted by code point, only
  ``"`` and ``\\`` escaped, everything else (control characters, non-ASCII) written raw,
  no floats.

Both agree on plain-ASCII metadata without control characters.
"""

from __future__ import annotations

import json
from typing import Any


class CanonicalError(ValueError):
    """The value cannot be written in the requested canonical form (a float, say)."""


def foundries_canonical(value: Any) -> bytes:
    """Return the Foundries (aktualizr jsoncpp) canonical form of ``value``.

    Args:
        value: A JSON value as produced by ``json.loads``.

    Returns:
        The bytes aktualizr's ``Utils::jsonToCanonicalStr`` would produce.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii")


def olpc_canonical(value: Any) -> bytes:
    """Return the OLPC canonical JSON form of ``value`` (what python-tuf signs).

    Args:
        value: A JSON value as produced by ``json.loads``; floats are refused.

    Returns:
        The UTF-8 encoded canonical text.

    Raises:
        CanonicalError: The value holds a float or a type JSON cannot express.
    """
    parts: list[str] = []
    _olpc_write(value, parts)
    return "".join(parts).encode("utf-8", errors="surrogatepass")


def _olpc_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _olpc_write(value: Any, out: list[str]) -> None:
    # bool before int: bool is a subclass of int in Python.
    if value is None or isinstance(value, bool):
        out.append(json.dumps(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_olpc_string(value))
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _olpc_write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise CanonicalError(f"object key {key!r} is not a string")
            if index:
                out.append(",")
            out.append(_olpc_string(key))
            out.append(":")
            _olpc_write(value[key], out)
        out.append("}")
    else:
        raise CanonicalError(f"{type(value).__name__} values have no canonical JSON form")
