"""Canonical JSON of both dialects, pinned on the inputs where they differ."""

from __future__ import annotations

import json

import pytest
from securesystemslib.formats import encode_canonical

from aklited.trust.canonical import CanonicalError, foundries_canonical, olpc_canonical

SAMPLES = [
    {"b": 1, "a": [True, False, None], "c": {"z": "y"}},
    {"text": "café"},
    {"text": "a\nb"},
    {"text": "\x01"},
    {"😀": 1, "z": 2, "é": 3},
    {"quote": 'say "hi" \\ there'},
]


@pytest.mark.parametrize("value", SAMPLES)
def test_olpc_matches_securesystemslib(value: object) -> None:
    assert olpc_canonical(value) == encode_canonical(value).encode("utf-8")


def test_foundries_form_is_jsoncpp_escaping() -> None:
    # jsoncpp (aktualizr) escapes every code point >= 0x80 and every control character.
    assert foundries_canonical({"text": "café"}) == b'{"text":"caf\\u00e9"}'
    assert foundries_canonical({"text": "a\nb"}) == b'{"text":"a\\nb"}'
    assert foundries_canonical({"text": "\x01"}) == b'{"text":"\\u0001"}'
    assert foundries_canonical({"😀": 1, "z": 2}) == b'{"z":2,"\\ud83d\\ude00":1}'


def test_dialects_differ_only_outside_plain_ascii() -> None:
    plain = {"signed": {"version": 3, "expires": "2030-01-01T00:00:00Z", "x": [1, "a"]}}
    assert foundries_canonical(plain) == olpc_canonical(plain)
    assert foundries_canonical({"t": "é"}) != olpc_canonical({"t": "é"})
    assert olpc_canonical({"t": "a\nb"}) == b'{"t":"a\nb"}'


def test_olpc_refuses_floats() -> None:
    with pytest.raises(CanonicalError):
        olpc_canonical({"x": 1.5})


def test_foundries_form_round_trips() -> None:
    value = {"k": ["é", {"n": -1}]}
    assert json.loads(foundries_canonical(value)) == value
