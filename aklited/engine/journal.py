"""The state journal: one SQLite file (WAL, synchronous=FULL) under ``storage.path``.

It holds one row per install (target, version, OSTree hash, apps, state, the install it
replaces, result), an append-only ``events`` table with every state transition, and the
trusted TUF metadata per role and version.

Invariant: a transition is committed *before* the side effect it announces. The easy way
to honour it is :meth:`Journal.step`::

    with journal.step(install.id, "pulling", commit=sha):   # durable before the body runs
        pull(sha)

so that after a crash at any point the journal names the step that was under way.

A file that is not an SQLite database, not aklited's, or damaged is reported with
:class:`~aklited.errors.JournalError` and never replaced: the operator decides what to do
with it. The API is synchronous and thread-safe; async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from aklited.errors import AkliteError, JournalError

# "akld": marks the file as aklited's so a foreign SQLite file is never taken over.
APPLICATION_ID = 0x616B6C64
SQLITE_HEADER = b"SQLite format 3\x00"
TUF_ROLES = ("root", "timestamp", "snapshot", "targets")
# Delegated targets roles are kept as "delegated:<name>" (aklited.trust.storage.delegated_key);
# the name is the repository's choice, so it only ever travels as a bound parameter.
TUF_DELEGATED_PREFIX = "delegated:"

# Each entry upgrades the schema from version i to i + 1; never edit a released entry.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE installs (
        id            INTEGER PRIMARY KEY,
        target_name   TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        ostree_hash   TEXT    NOT NULL,
        apps          TEXT    NOT NULL DEFAULT '{}',
        custom        TEXT    NOT NULL DEFAULT '{}',
        src_dir       TEXT,
        state         TEXT    NOT NULL,
        previous_id   INTEGER REFERENCES installs(id),
        is_current    INTEGER NOT NULL DEFAULT 0,
        was_installed INTEGER NOT NULL DEFAULT 0,
        result_code   INTEGER,
        result_message TEXT,
        created_at    TEXT    NOT NULL,
        updated_at    TEXT    NOT NULL
    );
    CREATE TABLE events (
        id         INTEGER PRIMARY KEY,
        install_id INTEGER REFERENCES installs(id),
        time       TEXT    NOT NULL,
        state      TEXT    NOT NULL,
        detail     TEXT    NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_install ON events(install_id, id);
    CREATE TABLE tuf_meta (
        role    TEXT    NOT NULL,
        version INTEGER NOT NULL,
        data    BLOB    NOT NULL,
        PRIMARY KEY (role, version)
    );
    -- the engine's triggers (e.g. aktualizr-lite.service was running) survive reboots here
    CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class InstallRecord:
    """One install as the journal knows it."""

    id: int
    target_name: str
    version: int
    ostree_commit: str  # column ostree_hash: the name schema 1 gave it
    apps: dict[str, str]
    custom: dict[str, Any]
    src_dir: str | None
    state: str
    previous_id: int | None
    is_current: bool
    was_installed: bool
    result_code: int | None
    result_message: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class Event:
    """One state transition, as appended to the journal."""

    id: int
    install_id: int | None
    time: str
    state: str
    detail: dict[str, Any] = field(default_factory=dict)


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as e:
        raise JournalError(f"{path}: cannot read the state journal: {e.strerror}") from e
    if header and header != SQLITE_HEADER:
        raise JournalError(
            f"{path}: not an SQLite database; move it away to let aklited start a new journal"
        )


class Journal:
    """The state journal. Open with :meth:`open` or :meth:`open_readonly`."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self._conn = conn
        self._path = path
        self._readonly = readonly
        self._lock = threading.RLock()

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, db_path: Path) -> Journal:
        """Open (creating or migrating) the journal for writing.

        Raises:
            JournalError: the file is not an SQLite database, belongs to another program,
                comes from a newer aklited, or is damaged.
        """
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if db_path.exists():
            _check_header(db_path)
        try:
            conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as e:
            raise JournalError(f"{db_path}: cannot open the state journal: {e}") from e
        store = cls(conn, db_path, readonly=False)
        try:
            store._prepare()
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, db_path: Path) -> Journal | None:
        """Open the journal without ever writing to it; None when there is none yet."""
        if not db_path.exists():
            return None
        _check_header(db_path)
        try:
            conn = sqlite3.connect(
                f"{db_path.resolve().as_uri()}?mode=ro",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.Error as e:
            raise JournalError(f"{db_path}: cannot open the state journal: {e}") from e
        store = cls(conn, db_path, readonly=True)
        try:
            store._verify_identity(allow_new=False)
        except BaseException:
            conn.close()
            raise
        return store

    @classmethod
    def open_for_check(cls, db_path: Path) -> Journal:
        """Read-only; when the device has no journal yet, an empty one in memory.

        A check must change nothing on the device, not even create the journal file.
        """
        existing = cls.open_readonly(db_path)
        if existing is not None:
            return existing
        conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        empty = cls(conn, db_path, readonly=False)
        empty._migrate(0)
        empty._readonly = True
        return empty

    def _prepare(self) -> None:
        # Identity first: a foreign file must not be touched, not even switched to WAL.
        version = self._verify_identity(allow_new=True)
        try:
            self._conn.execute("PRAGMA busy_timeout = 5000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise JournalError(f"{self._path}: cannot switch the journal to WAL mode ({mode})")
            self._conn.execute("PRAGMA synchronous = FULL")
            self._conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        self._migrate(version)

    def _damaged(self, e: sqlite3.Error) -> JournalError:
        return JournalError(
            f"{self._path}: state journal is damaged ({e}); "
            "keep the file for analysis and move it away to start a new journal"
        )

    def _verify_identity(self, *, allow_new: bool) -> int:
        """Check the file is aklited's, intact and not from a newer version; return its schema."""
        try:
            app_id = self._conn.execute("PRAGMA application_id").fetchone()[0]
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            check = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from e
        if check != "ok":
            raise self._damaged(sqlite3.DatabaseError(str(check)))
        if app_id == 0 and tables == 0 and allow_new:
            return 0
        if app_id != APPLICATION_ID:
            raise JournalError(
                f"{self._path}: an SQLite database that is not an aklited journal "
                f"(application_id {app_id:#x}); refusing to use or replace it"
            )
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self._path}: journal schema {version} is newer than this aklited "
                f"understands ({SCHEMA_VERSION}); install the newer aklited again"
            )
        return int(version)

    def _migrate(self, version: int) -> None:
        for target in range(version, SCHEMA_VERSION):
            script = (
                "BEGIN IMMEDIATE;"
                + MIGRATIONS[target]
                + f";PRAGMA application_id = {APPLICATION_ID};"
                + f"PRAGMA user_version = {target + 1};"
                + "COMMIT;"
            )
            with self._lock:
                try:
                    self._conn.executescript(script)
                except sqlite3.Error as e:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise JournalError(
                        f"{self._path}: cannot upgrade the journal to schema {target + 1}: {e}"
                    ) from e

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._path

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        if self._readonly:
            raise JournalError(f"{self._path}: the journal was opened read-only")
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            finally:
                cur.close()

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self._conn.cursor()
            cur.row_factory = sqlite3.Row
            try:
                return list(cur.execute(sql, args).fetchall())
            except sqlite3.DatabaseError as e:
                raise self._damaged(e) from e
            finally:
                cur.close()

    # ---- trusted TUF metadata -------------------------------------------------------------

    def tuf_latest(self, role: str) -> bytes | None:
        """The newest trusted metadata of ``role`` (for root: the highest version)."""
        _check_role(role)
        rows = self._query(
            "SELECT data FROM tuf_meta WHERE role = ? ORDER BY version DESC LIMIT 1", (role,)
        )
        return bytes(rows[0]["data"]) if rows else None

    def tuf_root(self, version: int) -> bytes | None:
        """A trusted root of an exact version."""
        rows = self._query(
            "SELECT data FROM tuf_meta WHERE role = 'root' AND version = ?", (version,)
        )
        return bytes(rows[0]["data"]) if rows else None

    def tuf_save(self, role: str, version: int, data: bytes) -> None:
        """Persist verified metadata. Roots are kept per version; other roles are replaced."""
        _check_role(role)
        with self._transaction() as cur:
            if role != "root":
                cur.execute("DELETE FROM tuf_meta WHERE role = ?", (role,))
            cur.execute(
                "INSERT OR REPLACE INTO tuf_meta(role, version, data) VALUES (?, ?, ?)",
                (role, version, data),
            )

    def tuf_forget(self, role: str) -> None:
        """Drop trusted metadata of a role (after a root rotation, as aktualizr-lite does)."""
        _check_role(role)
        with self._transaction() as cur:
            cur.execute("DELETE FROM tuf_meta WHERE role = ?", (role,))

    # ---- installs and their journal --------------------------------------------------------

    def begin_install(
        self,
        *,
        target_name: str,
        version: int,
        ostree_commit: str,
        apps: Mapping[str, str],
        custom: Mapping[str, Any] | None = None,
        src_dir: str | None = None,
        previous_id: int | None = None,
        state: str = "started",
        detail: Mapping[str, Any] | None = None,
    ) -> InstallRecord:
        """Create an install row and its first event in one transaction."""
        now = _now()
        with self._transaction() as cur:
            cur.execute(
                "INSERT INTO installs(target_name, version, ostree_hash, apps, custom, src_dir,"
                " state, previous_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    target_name,
                    version,
                    ostree_commit,
                    json.dumps(dict(apps), sort_keys=True),
                    json.dumps(dict(custom or {}), sort_keys=True),
                    src_dir,
                    state,
                    previous_id,
                    now,
                    now,
                ),
            )
            install_id = cur.lastrowid
            assert install_id is not None
            _append_event(cur, install_id, state, detail or {}, now)
        record = self.get_install(install_id)
        assert record is not None
        return record

    def record(self, install_id: int | None, state: str, **detail: Any) -> Event:
        """Append a transition (and move the install to ``state``); durable on return."""
        now = _now()
        with self._transaction() as cur:
            if install_id is not None:
                cur.execute(
                    "UPDATE installs SET state = ?, updated_at = ? WHERE id = ?",
                    (state, now, install_id),
                )
                if cur.rowcount != 1:
                    raise JournalError(f"{self._path}: no install {install_id} in the journal")
            event_id = _append_event(cur, install_id, state, detail, now)
        return Event(id=event_id, install_id=install_id, time=now, state=state, detail=detail)

    @contextmanager
    def step(self, install_id: int | None, state: str, **detail: Any) -> Iterator[Event]:
        """Record ``state`` before the body runs; record the failure if the body raises.

        The install keeps ``state`` after a failure, so a restart knows which step was under
        way; the failure itself is an event of its own (``<state>-failed``).
        """
        event = self.record(install_id, state, **detail)
        try:
            yield event
        except Exception as e:
            code = e.code if isinstance(e, AkliteError) else None
            self._append_only(install_id, f"{state}-failed", error=str(e), code=code)
            raise

    def record_failure(self, install_id: int | None, state: str, **detail: Any) -> None:
        """Append ``<state>-failed`` without moving the install off the step that failed."""
        self._append_only(install_id, f"{state}-failed", **detail)

    def _append_only(self, install_id: int | None, state: str, **detail: Any) -> None:
        with self._transaction() as cur:
            _append_event(cur, install_id, state, detail, _now())

    def finish_install(
        self,
        install_id: int,
        *,
        state: str,
        result_code: int,
        result_message: str,
        make_current: bool = False,
        detail: Mapping[str, Any] | None = None,
    ) -> InstallRecord:
        """Close an install with its result; ``make_current`` moves the current marker to it."""
        now = _now()
        with self._transaction() as cur:
            if make_current:
                cur.execute("UPDATE installs SET is_current = 0 WHERE is_current = 1")
            cur.execute(
                "UPDATE installs SET state = ?, result_code = ?, result_message = ?,"
                " updated_at = ?, is_current = CASE WHEN ? THEN 1 ELSE is_current END,"
                " was_installed = CASE WHEN ? THEN 1 ELSE was_installed END WHERE id = ?",
                (state, result_code, result_message, now, make_current, make_current, install_id),
            )
            if cur.rowcount != 1:
                raise JournalError(f"{self._path}: no install {install_id} in the journal")
            _append_event(
                cur,
                install_id,
                state,
                {"code": result_code, "message": result_message, **(detail or {})},
                now,
            )
        record = self.get_install(install_id)
        assert record is not None
        return record

    def get_install(self, install_id: int) -> InstallRecord | None:
        rows = self._query("SELECT * FROM installs WHERE id = ?", (install_id,))
        return _install(rows[0]) if rows else None

    def current_install(self) -> InstallRecord | None:
        """The install the device runs now, as far as the journal knows."""
        rows = self._query("SELECT * FROM installs WHERE is_current = 1 ORDER BY id DESC LIMIT 1")
        return _install(rows[0]) if rows else None

    def latest_install(self) -> InstallRecord | None:
        rows = self._query("SELECT * FROM installs ORDER BY id DESC LIMIT 1")
        return _install(rows[0]) if rows else None

    def installs(self) -> list[InstallRecord]:
        return [_install(r) for r in self._query("SELECT * FROM installs ORDER BY id")]

    def events(self, install_id: int | None = None) -> list[Event]:
        if install_id is None:
            rows = self._query("SELECT * FROM events ORDER BY id")
        else:
            rows = self._query(
                "SELECT * FROM events WHERE install_id = ? ORDER BY id", (install_id,)
            )
        return [
            Event(
                id=r["id"],
                install_id=r["install_id"],
                time=r["time"],
                state=r["state"],
                detail=json.loads(r["detail"]),
            )
            for r in rows
        ]

    # ---- small persistent settings --------------------------------------------------------

    def get_setting(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM settings WHERE key = ?", (key,))
        return str(rows[0]["value"]) if rows else None

    def set_setting(self, key: str, value: str | None) -> None:
        with self._transaction() as cur:
            if value is None:
                cur.execute("DELETE FROM settings WHERE key = ?", (key,))
            else:
                cur.execute(
                    "INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)", (key, value)
                )


def _check_role(role: str) -> None:
    if role in TUF_ROLES or (
        role.startswith(TUF_DELEGATED_PREFIX) and len(role) > len(TUF_DELEGATED_PREFIX)
    ):
        return
    raise ValueError(f"unknown TUF role {role!r}")


def _append_event(
    cur: sqlite3.Cursor, install_id: int | None, state: str, detail: Mapping[str, Any], now: str
) -> int:
    cur.execute(
        "INSERT INTO events(install_id, time, state, detail) VALUES (?, ?, ?, ?)",
        (install_id, now, state, json.dumps(dict(detail), sort_keys=True, default=str)),
    )
    event_id = cur.lastrowid
    assert event_id is not None
    return event_id


def _install(row: sqlite3.Row) -> InstallRecord:
    return InstallRecord(
        id=row["id"],
        target_name=row["target_name"],
        version=row["version"],
        ostree_commit=row["ostree_hash"],
        apps=json.loads(row["apps"]),
        custom=json.loads(row["custom"]),
        src_dir=row["src_dir"],
        state=row["state"],
        previous_id=row["previous_id"],
        is_current=bool(row["is_current"]),
        was_installed=bool(row["was_installed"]),
        result_code=row["result_code"],
        result_message=row["result_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
