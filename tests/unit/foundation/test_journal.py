from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from aklited.engine.journal import SCHEMA_VERSION, Journal
from aklited.errors import AppsError, AppsRunError, JournalError


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var/sota/aklited.db"


def test_new_journal_is_wal_full_and_versioned(db: Path) -> None:
    with Journal.open(db):
        pass
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x616B6C64
    finally:
        conn.close()


def test_install_lifecycle_and_events(db: Path) -> None:
    with Journal.open(db) as store:
        first = store.begin_install(
            target_name="rpi4-lmp-1", version=1, ostree_commit="aa" * 32, apps={"app1": "u1"}
        )
        store.finish_install(
            first.id, state="current", result_code=0, result_message="ok", make_current=True
        )
        second = store.begin_install(
            target_name="rpi4-lmp-2",
            version=2,
            ostree_commit="bb" * 32,
            apps={"app1": "u2"},
            previous_id=first.id,
            custom={"tags": ["main"]},
        )
        store.record(second.id, "pulling", commit="bb" * 32)
        assert store.current_install() == store.get_install(first.id)
        store.finish_install(
            second.id, state="current", result_code=0, result_message="ok", make_current=True
        )
        current = store.current_install()
        assert current is not None
        assert current.target_name == "rpi4-lmp-2"
        assert current.previous_id == first.id
        assert current.custom == {"tags": ["main"]}
        old = store.get_install(first.id)
        assert old is not None and not old.is_current and old.was_installed
        states = [e.state for e in store.events(second.id)]
        assert states == ["started", "pulling", "current"]
        assert store.events(second.id)[1].detail == {"commit": "bb" * 32}


def test_step_records_before_body_and_failure_after(db: Path) -> None:
    with Journal.open(db) as store:
        install = store.begin_install(target_name="t", version=1, ostree_commit="c", apps={})
        seen_inside: list[str] = []
        with pytest.raises(AppsError), store.step(install.id, "loading-images", app="a"):
            # the transition is durable before the side effect: another reader sees it
            with Journal.open_readonly(db) as reader:  # type: ignore[union-attr]
                rec = reader.get_install(install.id)
                assert rec is not None
                seen_inside.append(rec.state)
            raise AppsRunError("image load failed")
        assert seen_inside == ["loading-images"]
        events = store.events(install.id)
        assert [e.state for e in events] == ["started", "loading-images", "loading-images-failed"]
        assert events[-1].detail["code"] == 80
        # the install stays at the step that was under way, so a restart knows where it was
        rec = store.get_install(install.id)
        assert rec is not None and rec.state == "loading-images"


def test_tuf_metadata_per_role_and_version(db: Path) -> None:
    with Journal.open(db) as store:
        assert store.tuf_latest("root") is None
        store.tuf_save("root", 1, b"r1")
        store.tuf_save("root", 3, b"r3")
        store.tuf_save("root", 2, b"r2")
        store.tuf_save("targets", 5, b"t5")
        store.tuf_save("targets", 6, b"t6")
        assert store.tuf_latest("root") == b"r3"
        assert store.tuf_root(2) == b"r2"
        assert store.tuf_latest("targets") == b"t6"
        store.tuf_forget("targets")
        assert store.tuf_latest("targets") is None
        assert store.tuf_latest("root") == b"r3"
        with pytest.raises(ValueError, match="unknown TUF role"):
            store.tuf_save("mirror", 1, b"x")


def test_readonly_never_writes(db: Path) -> None:
    assert Journal.open_readonly(db) is None
    assert not db.exists()
    with Journal.open(db) as store:
        store.tuf_save("root", 1, b"r1")
    before = db.read_bytes()
    reader = Journal.open_readonly(db)
    assert reader is not None
    with reader:
        assert reader.tuf_latest("root") == b"r1"
        with pytest.raises(JournalError, match="read-only"):
            reader.tuf_save("root", 2, b"r2")
    assert db.read_bytes() == before


def test_settings(db: Path) -> None:
    with Journal.open(db) as store:
        store.set_setting("aktualizr-lite-was-running", "1")
        assert store.get_setting("aktualizr-lite-was-running") == "1"
        store.set_setting("aktualizr-lite-was-running", None)
        assert store.get_setting("aktualizr-lite-was-running") is None


def test_garbage_file_is_reported_not_replaced(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database at all" * 100)
    before = db.read_bytes()
    with pytest.raises(JournalError, match="not an SQLite database"):
        Journal.open(db)
    with pytest.raises(JournalError, match="not an SQLite database"):
        Journal.open_readonly(db)
    assert db.read_bytes() == before


def test_truncated_database_is_reported(db: Path) -> None:
    with Journal.open(db) as store:
        for i in range(200):
            store.record(None, f"event-{i}", payload="x" * 200)
    # fold the WAL into the main file, then cut the file in the middle of its pages
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = db.read_bytes()
    assert len(data) > 8192
    db.write_bytes(data[: len(data) // 2 + 100])
    before = db.read_bytes()
    with pytest.raises(JournalError, match="damaged"):
        Journal.open(db)
    assert db.read_bytes() == before


def test_foreign_sqlite_database_is_refused(db: Path) -> None:
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE other_app(x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(JournalError, match="not an aklited journal"):
        Journal.open(db)
    assert db.read_bytes() == before


def test_newer_schema_is_refused(db: Path) -> None:
    with Journal.open(db):
        pass
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="newer than this aklited"):
        Journal.open(db)
