"""The journal survives a process killed with SIGKILL at any point (real process, real file)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from aklited.engine.journal import Journal

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aklited.engine.journal import Journal

    store = Journal.open(Path(sys.argv[1]))
    mode = sys.argv[2]
    install = store.begin_install(target_name="t-2", version=2, ostree_commit="ab" * 32, apps={})
    print("install", install.id, flush=True)
    if mode == "two-writes":
        store.record(install.id, "pulling", commit="ab" * 32)
        print("committed pulling", flush=True)
        time.sleep(60)  # killed here, between this write and the next
        store.record(install.id, "deployed")
    else:
        i = 0
        while True:
            event = store.record(install.id, f"step-{i}", n=i)
            print("committed", event.id, flush=True)
            i += 1
    """
)


def start_writer(db: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), mode],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_transition_survives_sigkill_between_two_writes(tmp_path: Path) -> None:
    db = tmp_path / "aklited.db"
    proc = start_writer(db, "two-writes")
    try:
        assert proc.stdout is not None
        install_id = int(proc.stdout.readline().split()[1])
        assert proc.stdout.readline().strip() == "committed pulling"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # the WAL is still beside the database: the kill left it un-checkpointed
    assert db.with_name(db.name + "-wal").exists()
    with Journal.open(db) as store:
        install = store.get_install(install_id)
        assert install is not None
        assert install.state == "pulling"
        assert [e.state for e in store.events(install_id)] == ["started", "pulling"]
        # and the journal is still writable after the crash
        store.record(install_id, "deployed")
        assert store.get_install(install_id).state == "deployed"  # type: ignore[union-attr]


def test_no_committed_event_is_lost_when_killed_mid_stream(tmp_path: Path) -> None:
    db = tmp_path / "aklited.db"
    proc = start_writer(db, "stream")
    committed: list[int] = []
    try:
        assert proc.stdout is not None
        install_id = int(proc.stdout.readline().split()[1])
        # let a few hundred transactions commit, then kill mid-write
        while len(committed) < 300:
            line = proc.stdout.readline()
            assert line.startswith("committed"), line
            committed.append(int(line.split()[1]))
        os.kill(proc.pid, signal.SIGKILL)
        # drain what was printed before the kill: those were committed too
        for line in proc.stdout:
            committed.append(int(line.split()[1]))
    finally:
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    with Journal.open(db) as store:
        ids = {e.id for e in store.events(install_id)}
        missing = [c for c in committed if c not in ids]
        assert missing == []
        # events are contiguous: nothing half-written in between
        event_ids = sorted(ids)
        assert event_ids == list(range(event_ids[0], event_ids[-1] + 1))
