"""A real systemd-journald, in a private mount namespace, records the daemon's log lines
with their AKLITED_* fields (read back with journalctl -o json)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

JOURNALD = Path("/lib/systemd/systemd-journald")

EMITTER = textwrap.dedent(
    """
    import logging, structlog
    from aklited.log import configure_logging
    target = configure_logging(target="journald", level=logging.DEBUG)
    assert target == "journald", target
    log = structlog.get_logger("aklited.test")
    with structlog.contextvars.bound_contextvars(transaction_id="tx-42"):
        log.info("install started", target="rpi4-lmp-7", state="verifying")
    log.warning("multi\\nline message", detail="line1\\nline2")
    log.info("big entry", blob="x" * 300000)
    """
)

# Everything runs inside one mount namespace: journald's sockets and its journal files live
# on tmpfs mounts that the host never sees, and die with the namespace.
NAMESPACE_SCRIPT = textwrap.dedent(
    """
    set -eu
    mount -t tmpfs tmpfs /run/systemd/journal
    mount -t tmpfs tmpfs /run/log
    mount -t tmpfs tmpfs /var/log/journal
    {journald} &
    jpid=$!
    trap 'kill $jpid; wait $jpid || true' EXIT
    for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
    {python} -c "$EMITTER"
    journalctl --sync
    journalctl -o json --all --no-pager SYSLOG_IDENTIFIER=aklited
    """
)


@pytest.mark.root
def test_daemon_lines_reach_journald_with_fields(tmp_path: Path) -> None:
    if not JOURNALD.exists() or shutil.which("unshare") is None:
        pytest.fail("systemd-journald and unshare are required (scripts/setup.sh installs them)")
    for d in ("/run/systemd/journal", "/run/log", "/var/log/journal"):
        Path(d).mkdir(parents=True, exist_ok=True)
    script = NAMESPACE_SCRIPT.format(journald=JOURNALD, python=sys.executable)
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        env={"EMITTER": EMITTER, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        cwd=Path(__file__).resolve().parents[3],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    by_message = {e["MESSAGE"]: e for e in entries if isinstance(e.get("MESSAGE"), str)}

    started = by_message["install started"]
    assert started["AKLITED_TARGET"] == "rpi4-lmp-7"
    assert started["AKLITED_STATE"] == "verifying"
    assert started["AKLITED_TRANSACTION_ID"] == "tx-42"
    assert started["PRIORITY"] == "6"
    assert started["SYSLOG_IDENTIFIER"] == "aklited"
    assert started["CODE_FILE"] == "<string>"
    assert started["CODE_LINE"] == "8"
    assert started["CODE_FUNC"] == "<module>"

    warning = by_message["multi\nline message"]
    assert warning["PRIORITY"] == "4"
    assert warning["AKLITED_DETAIL"] == "line1\nline2"

    # larger than a datagram: sent as a sealed memfd, recorded whole
    big = by_message["big entry"]
    assert big["AKLITED_BLOB"] == "x" * 300000
