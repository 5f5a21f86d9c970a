from __future__ import annotations

import io
import logging
from pathlib import Path

import structlog

from aklited.log import configure_logging, encode_journal_message, journal_fields


def test_fields_upper_case_and_prefixed() -> None:
    fields = journal_fields(
        {
            "event": "pull done",
            "level": "error",
            "pathname": "/x/ostree.py",
            "lineno": 12,
            "func_name": "pull",
            "commit": "ab",
            "app-name": "shellhttpd",
        }
    )
    assert fields["MESSAGE"] == "pull done"
    assert fields["PRIORITY"] == "3"
    assert fields["SYSLOG_IDENTIFIER"] == "aklited"
    assert fields["CODE_FILE"] == "/x/ostree.py"
    assert fields["CODE_LINE"] == "12"
    assert fields["CODE_FUNC"] == "pull"
    assert fields["AKLITED_COMMIT"] == "ab"
    assert fields["AKLITED_APP_NAME"] == "shellhttpd"
    assert "AKLITED_LEVEL" not in fields


def test_native_encoding_of_multiline_values() -> None:
    data = encode_journal_message({"MESSAGE": "a\nb", "X": "y"})
    assert data == b"MESSAGE\n" + (3).to_bytes(8, "little") + b"a\nb\n" + b"X=y\n"


def test_daemon_falls_back_to_stderr_without_journal(tmp_path: Path) -> None:
    stream = io.StringIO()
    used = configure_logging(
        target="journald", level=logging.INFO, stream=stream, journal_socket=tmp_path / "none"
    )
    assert used == "console"
    structlog.get_logger("t").info("hello", target="rpi4-lmp-1")
    structlog.get_logger("t").debug("filtered out")
    out = stream.getvalue()
    assert "hello" in out
    assert "target=rpi4-lmp-1" in out
    assert "filtered out" not in out
